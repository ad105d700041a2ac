#!/usr/bin/env bash
# Installs kerascompress and the data it uses offline. Usage: scripts/setup.sh [--test]
#   --test   also install the test extras
# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (no download at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
python -m pip install -q --disable-pip-version-check -e ".${extras}"
