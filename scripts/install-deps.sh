#!/usr/bin/env bash
# Installs the Debian packages meshid needs to build and test, and nothing else.
# Idempotent: runs `apt-get update` only when a package is actually missing.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config clang libclang-rt-14-dev
  libssl-dev openssl
  libsqlite3-dev sqlite3
  libjansson-dev libyaml-dev libcmocka-dev
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
  libpq-dev libcurl4-openssl-dev libmicrohttpd-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: missing packages (${missing[*]}) and not root; install them or run as root" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
