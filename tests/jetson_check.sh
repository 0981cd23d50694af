#!/usr/bin/env bash
# `make jetson-check`: the versions a Jetson installs (constraints/jetson.txt) run smartbin as JetPack 6 has it.
#
# JetPack 6 is Ubuntu 22.04 with Python 3.10 and an OpenCV built for numpy 1.x, so smartbin[jetson] keeps
# numpy below 2 and brings no OpenCV of its own. This builds that environment on this machine: a Python 3.10
# venv with smartbin[jetson] from constraints/jetson.txt, which must not bring a cv2, then a numpy-1 build of
# OpenCV standing in for JetPack's. There, `smartbin predict` must give this machine's top-1 and confidence
# on a real photograph with LiteRT (int8) and ONNX Runtime (model.onnx, on the CPU: no GPU here), and the
# Jetson's shipped config must check. Not in CI (it installs from pip's index); no root needed.
#
#   tests/jetson_check.sh BUNDLE IMAGE HOST_PYTHON PYTHON3.10
set -euo pipefail
BUNDLE=${1:?bundle folder with int8.tflite and model.onnx}
IMAGE=${2:?a real photograph}
HOST_PYTHON=${3:?the host venv python}
PY310=${4:?a Python 3.10, as JetPack 6 ships}
SRC=$(cd "$(dirname "$0")/.." && pwd)
VENV="$SRC/.cache/jetson-venv"
die() { echo "jetson-check: $*" >&2; exit 2; }

[ "$("$PY310" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = 3.10 ] || die "$PY310 is not Python 3.10"
rm -rf "$VENV"
"$PY310" -m venv "$VENV"
"$VENV/bin/pip" install --quiet -c "$SRC/constraints/jetson.txt" "$SRC[jetson]" 2>&1 | grep -v '^WARNING: Location' || true
! "$VENV/bin/python" -c 'import cv2' 2>/dev/null || die "smartbin[jetson] brought a cv2: it would shadow JetPack's"
# JetPack's OpenCV, stood in for by a wheel built for numpy 1.x; the pins must stay as they are
"$VENV/bin/pip" install --quiet -c "$SRC/constraints/jetson.txt" opencv-python-headless 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/pip" check >/dev/null || die "$("$VENV/bin/pip" check)"
versions=$("$VENV/bin/python" -c 'import importlib.metadata as m, sys
print(sys.version.split()[0], *(f"{p}=={m.version(p)}" for p in ("numpy", "ai-edge-litert", "onnxruntime", "opencv-python-headless")))')
echo "installed: Python $versions"
while read -r pin; do
  name=${pin%%==*}
  have=$("$VENV/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name")
  [ "$name==$have" = "$pin" ] || die "$name is $have, constraints/jetson.txt pins $pin"
done < <(grep -v '^#' "$SRC/constraints/jetson.txt")

for variant in int8 onnx; do
  jetson=$("$VENV/bin/smartbin" predict "$BUNDLE" "$IMAGE" --variant "$variant" --json 2>/dev/null)
  host=$("$HOST_PYTHON" -m edge.cli predict "$BUNDLE" "$IMAGE" --variant "$variant" --json 2>/dev/null)
  "$HOST_PYTHON" - "$jetson" "$host" "$variant" <<'PY'
import json, sys

jetson, host, variant = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print(f"predict {variant}: Python 3.10/numpy 1 {jetson['label']} ({jetson['confidence']:.4f}), "
      f"this venv {host['label']} ({host['confidence']:.4f})")
assert jetson["label"] == host["label"], "top-1 differs"
assert abs(jetson["confidence"] - host["confidence"]) <= 1e-3, "confidence differs"
PY
done
"$VENV/bin/smartbin" config check "$SRC/firmware_config/jetson-orin-nano.yaml" || die "the Jetson's config does not check"
echo "jetson-check: passed"
