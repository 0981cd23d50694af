#!/usr/bin/env bash
# `make constraints`: pin what a device installs, so that two bins installed a month apart run the same
# numpy, OpenCV, LiteRT and ONNX Runtime. For each machine (default: x86_64 aarch64) pip resolves
# smartbin[edge,onnx] for that machine's wheels and the devices' Python (PYVER, default 3.11: Debian 12 and
# Raspberry Pi OS 12) without installing anything, and writes constraints/<machine>.txt, which
# systemd/install.sh passes to pip (-c) on a board of that machine. x86_64's versions (what the suite tests)
# constrain the other machines', so every bin runs those. `jetson` is JetPack 6 on an Orin: smartbin[jetson] for
# aarch64 and its Python 3.10, with numpy 1.x for JetPack's OpenCV; x86_64's pins hold there except those
# that cannot (JETSON_OWN: numpy 1.x and what is built against it, and releases that dropped Python 3.10).
# Needs the network (or pip's index settings for a mirror).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
PIP=${PIP:-pip}
PYVER=${PYVER:-3.11}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
JETSON_OWN="numpy|ml_dtypes|onnxruntime|pycparser"
for board in ${@:-x86_64 aarch64 jetson}; do
  machine=$board pyver=$PYVER extras=edge,onnx own='^#'
  [ "$board" != jetson ] || machine=aarch64 pyver=3.10 extras=jetson own="^($JETSON_OWN)="
  platforms=()
  for tag in manylinux_2_28 manylinux_2_27 manylinux2014; do platforms+=(--platform "${tag}_$machine"); done
  constrain=()
  if [ "$board" != x86_64 ] && [ -f "$SRC/constraints/x86_64.txt" ]; then
    grep -vE "$own" "$SRC/constraints/x86_64.txt" >"$work/shared.txt"
    constrain=(-c "$work/shared.txt")
  fi
  "$PIP" install --quiet --dry-run --ignore-installed --target "$work/never" --only-binary=:all: \
    --python-version "$pyver" "${platforms[@]}" "${constrain[@]}" --report "$work/$board.json" "$SRC[$extras]"
  out="$SRC/constraints/$board.txt"
  {
    echo "# smartbin[$extras] for $machine, Python $pyver, resolved by constraints/refresh.sh on $(date -u +%Y-%m-%d)"
    python3 -c 'import json, sys
report = json.load(open(sys.argv[1]))
pins = sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"])
print("\n".join(f"{name}=={version}" for name, version in pins if name != "smartbin"))' "$work/$board.json"
  } >"$out"
  echo "wrote $out"
done
