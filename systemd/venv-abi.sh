#!/usr/bin/env bash
# Keep a --system-site-packages venv's view of the OS's compiled modules working with the venv's numpy.
#
#   systemd/venv-abi.sh VENV [--find-links DIR] MODULE[=PACKAGE] ...
#
# Raspberry Pi OS ships picamera2 through apt, with modules compiled for its numpy 1.24 (simplejpeg);
# smartbin's venv needs numpy 2 (OpenCV >= 4.11 and LiteRT's ml_dtypes require it), and a module built
# for numpy 1.x fails to import under numpy 2 ("numpy.dtype size changed", "compiled using NumPy 1.x").
# Keeping the OS's numpy would hold OpenCV and LiteRT back; so each such module that fails gets its own
# numpy-2 build from the registry inside the venv (--no-deps: numpy stays), which shadows the OS's copy.
# Exits 1, naming the module, if one still does not import.
set -euo pipefail

VENV=${1:?usage: venv-abi.sh VENV [--find-links DIR] MODULE[=PACKAGE] ...}
shift
pip_args=(--quiet --force-reinstall --no-deps)
if [ "${1:-}" = --find-links ]; then
  pip_args+=(--no-index --find-links "${2:?}")
  shift 2
fi
status=0
for spec in "$@"; do
  module=${spec%%=*} package=${spec#*=}
  if err=$("$VENV/bin/python" -c "import $module" 2>&1); then
    echo "$module: imports"
    continue
  fi
  case "$err" in
    *numpy*|*NumPy*|*_ARRAY_API*|*multiarray*) ;;
    *) echo "$module: does not import, not a numpy mismatch: ${err##*$'\n'}" >&2; status=1; continue ;;
  esac
  echo "$module: built for another numpy than the venv's; installing $package into $VENV"
  "$VENV/bin/pip" install "${pip_args[@]}" "$package"
  if err=$("$VENV/bin/python" -c "import $module" 2>&1); then
    echo "$module: imports"
  else
    echo "$module: still does not import: ${err##*$'\n'}" >&2
    status=1
  fi
done
exit $status
