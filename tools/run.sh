#!/usr/bin/env bash
# Installs the packages, builds corral (Release) and starts a standalone corrald on its
# embedded defaults: http://127.0.0.1:8181, data in ./data. Extra arguments go to
# corrald (see ./build-release/corrald --help). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target corrald
exec ./build-release/corrald "$@"
