#!/usr/bin/env bash
# `make constraints`: pin what a device installs, so that two bins installed a month apart run the same
# numpy, OpenCV, LiteRT and ONNX Runtime. For each machine (default: x86_64 aarch64) pip resolves
# smartbin[edge,onnx] for that machine's wheels and the devices' Python (PYVER, default 3.11: Debian 12 and
# Raspberry Pi OS 12) without installing anything, and writes constraints/<machine>.txt, which
# systemd/install.sh passes to pip (-c) on a board of that machine. x86_64's versions (what the suite tests)
# constrain the other machines', so every bin runs those. Needs the network (or pip's index
# settings for a mirror).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
PIP=${PIP:-pip}
PYVER=${PYVER:-3.11}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for machine in ${@:-x86_64 aarch64}; do
  platforms=()
  for tag in manylinux_2_28 manylinux_2_27 manylinux2014; do platforms+=(--platform "${tag}_$machine"); done
  constrain=()
  [ "$machine" = x86_64 ] || [ ! -f "$SRC/constraints/x86_64.txt" ] || constrain=(-c "$SRC/constraints/x86_64.txt")
  "$PIP" install --quiet --dry-run --ignore-installed --target "$work/never" --only-binary=:all: \
    --python-version "$PYVER" "${platforms[@]}" "${constrain[@]}" --report "$work/$machine.json" "$SRC[edge,onnx]"
  out="$SRC/constraints/$machine.txt"
  {
    echo "# smartbin[edge,onnx] for $machine, Python $PYVER, resolved by constraints/refresh.sh on $(date -u +%Y-%m-%d)"
    python3 -c 'import json, sys
report = json.load(open(sys.argv[1]))
pins = sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in report["install"])
print("\n".join(f"{name}=={version}" for name, version in pins if name != "smartbin"))' "$work/$machine.json"
  } >"$out"
  echo "wrote $out"
done
