#!/bin/sh
# corral vs etcd v2 vs ZooKeeper, side by side (issue 5). One command:
#   tools/bench/run.sh [--quick] [bench.py options, e.g. --only W1-W5,W6 --systems corral,zk]
# Installs what it needs from Debian, builds corrald (Release) and the drivers, then runs
# tools/bench/bench.py, which writes tools/bench/results/<date>[-quick]/.
# --quick: short runs (about 6 minutes), a smoke test; without it, the real thing
# (about 35 minutes on 2 cores).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

# corral's own build dependencies first (cmake, jemalloc, ...: a fresh Debian 12 machine
# has none of them), then the other systems and the load generator
"$root/tools/setup.sh"

need=""
command -v etcd >/dev/null || need="$need etcd-server"
[ -f /usr/share/java/zookeeper.jar ] || need="$need zookeeper"
command -v java >/dev/null || need="$need default-jre-headless"
command -v wrk >/dev/null || need="$need wrk"
command -v gnuplot >/dev/null || need="$need gnuplot-nox"
command -v taskset >/dev/null || need="$need util-linux"
[ -f /usr/include/zookeeper/zookeeper.h ] || need="$need libzookeeper-mt-dev"
[ -f /usr/lib/x86_64-linux-gnu/libzookeeper_st.so.2 ] || need="$need libzookeeper-st2"
if [ -n "$need" ]; then
    echo "installing:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

cmake -S "$root" -B "$root/build-release" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$root/build-release" -j2 --target corrald >/dev/null
make -s -C "$here" >/dev/null

# 10,000 watchers need 10,000 sockets on each side
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 "$here/bench.py" --corrald "$root/build-release/corrald" "$@"
