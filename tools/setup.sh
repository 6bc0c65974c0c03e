#!/usr/bin/env bash
# Installs what corral needs to build and test on Debian 12 (run as root or with sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
packages=(build-essential cmake pkg-config libmicrohttpd-dev libjansson-dev libuv1-dev
          libnanomsg-dev libjemalloc-dev libcmocka-dev python3 python3-yaml curl iproute2
          clang-format)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
