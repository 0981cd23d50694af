#!/usr/bin/env bash
# `make constraints`: pin what a device installs, so that two bins installed a month apart run the same
# numpy, OpenCV, LiteRT and ONNX Runtime. Resolves smartbin[edge,onnx] in a fresh venv with this machine's
# Python (use the devices' Python: Debian 12 and Raspberry Pi OS 12 have 3.11) and writes
# constraints/<machine>.txt, which systemd/install.sh passes to pip (-c) on a board of that machine.
# Needs the network, or FIND_LINKS=folder with the wheels.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
args=(--quiet)
[ -z "${FIND_LINKS:-}" ] || args+=(--no-index --find-links "$FIND_LINKS")
"$work/venv/bin/pip" install "${args[@]}" "$SRC[edge,onnx]"
out="$SRC/constraints/$(uname -m).txt"
{
  echo "# smartbin[edge,onnx] resolved by constraints/refresh.sh with Python $("$work/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') on $(date -u +%Y-%m-%d)"
  "$work/venv/bin/pip" freeze --exclude smartbin
} >"$out"
echo "wrote $out"
