#!/usr/bin/env bash
# Install the development dependencies and run the whole test suite.
# Services the tests start on loopback (redis-server, ...) come from Debian
# packages when this runs as root on a Debian/Ubuntu machine.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(redis-server postgresql chromium fonts-dejavu-core)

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e ".[dev]"
python3 -m pip install -q --disable-pip-version-check -e clients/python
# A real Triton server for the remote-model tests: the nvidia-pytriton wheel's tritonserver
# binary, unpacked without its Python dependencies (it pins numpy < 2; we only run the binary).
[ -x .cache/pytriton/pytriton/tritonserver/bin/tritonserver ] || \
  python3 -m pip install -q --disable-pip-version-check --no-deps --target .cache/pytriton "nvidia-pytriton==0.7.0"
exec python3 -m pytest "$@"
