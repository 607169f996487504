#!/usr/bin/env bash
# Installs the Debian packages nibble builds with, when any is missing. Needs root (or sudo).
set -euo pipefail
pkgs=(build-essential cmake ninja-build nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev
      libgmock-dev libbenchmark-dev libcpp-httplib-dev python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "nibble: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
