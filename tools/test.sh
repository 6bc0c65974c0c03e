#!/usr/bin/env bash
# Installs the packages, builds corral twice (optimised, and with ASan + UBSan) and runs
# the whole test suite under both: unit tests, the cluster simulation, end-to-end tests
# against real corrald processes, and fault tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
jobs=$(nproc)

echo "== format (.clang-format)"
clang-format --dry-run -Werror api/*.c api/*.h engine/*.c engine/*.h cluster/*.c cluster/*.h \
    tests/unit/*.c tests/unit/*.h tests/sim/*.c tools/bench/*.c

echo "== build (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
echo "== test (RelWithDebInfo)"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 600)

echo "== build (ASan + UBSan)"
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Debug -DCORRAL_SANITIZE=ON >/dev/null
cmake --build build-sanitize -j"$jobs"
echo "== test (ASan + UBSan)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-sanitize && ctest --output-on-failure -j"$jobs" --timeout 900)
