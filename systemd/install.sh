#!/usr/bin/env bash
# Install smartbin as a systemd service on a Raspberry Pi, a Jetson or an x86 box.
#
#   sudo systemd/install.sh [--board rpi4|rpi5|jetson-orin-nano|x86-dev] [--bundle DIR]
#   sudo systemd/install.sh --uninstall [--purge]   # --purge: also config, state, overrides, user
#   systemd/install.sh --dry-run ...        # print what would be done, change nothing
#   systemd/install.sh --prefix DIR ...     # install under DIR (packaging, tests); no user, no systemctl
#   --python PATH                           # the interpreter for the venv (default python3)
#
# Idempotent: running it again upgrades the package and units, keeps /etc/smartbin/config.yaml.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BOARD="" BUNDLE="" PREFIX="" DRY=0 UNINSTALL=0 PURGE=0 VENV="" FIND_LINKS="" PYTHON=python3
BOARDS="rpi4 rpi5 jetson-nano jetson-orin-nano x86-dev"

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --board) BOARD=${2:?}; shift ;;
    --bundle) BUNDLE=${2:?}; shift ;;
    --prefix) PREFIX=${2:?}; shift ;;
    --venv) VENV=${2:?}; shift ;;           # use an existing virtual environment
    --find-links) FIND_LINKS=${2:?}; shift ;; # offline wheels for pip
    --python) PYTHON=${2:?}; shift ;;
    --dry-run) DRY=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

run() {  # print every action; carry it out unless --dry-run
  echo "+ $*"
  [ "$DRY" -eq 1 ] || "$@"
}

detect_board() {
  local model=""
  [ -r /proc/device-tree/model ] && model=$(tr -d '\0' </proc/device-tree/model)
  case "$model" in
    *"Raspberry Pi 5"*) echo rpi5 ;;
    *"Raspberry Pi 4"*) echo rpi4 ;;
    *Orin*) echo jetson-orin-nano ;;
    *Jetson*|*"NVIDIA"*) echo jetson-nano ;;
    *) if [ -e /etc/nv_tegra_release ]; then echo jetson-nano;
       elif [ "$(uname -m)" = x86_64 ]; then echo x86-dev; fi ;;
  esac
}

if [ -z "$PREFIX" ] && [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo), or use --dry-run to see what it would do, or --prefix DIR"
fi

ETC="$PREFIX/etc/smartbin"
STATE="$PREFIX/var/lib/smartbin"
UNITS="$PREFIX/etc/systemd/system"
JETSON_DROP_IN=10-jetson-camera.conf
OPT="$PREFIX/opt/smartbin"
[ -n "$VENV" ] || VENV="$OPT/venv"

if [ "$UNINSTALL" -eq 1 ]; then
  if [ -z "$PREFIX" ]; then
    run systemctl disable --now smartbin-edge.service smartbin-actuator.service || true
  fi
  run rm -f "$UNITS/smartbin-edge.service" "$UNITS/smartbin-actuator.service" "$UNITS/smartbin-edge.service.d/$JETSON_DROP_IN"
  run rm -rf "$OPT"
  if [ "$PURGE" -eq 1 ]; then
    # the state, the config, local overrides (systemctl edit) and the service user
    run rm -rf "$ETC" "$STATE" "$UNITS/smartbin-edge.service.d" "$UNITS/smartbin-actuator.service.d"
    if [ -z "$PREFIX" ] && id smartbin >/dev/null 2>&1; then run userdel smartbin; fi
  else
    echo "kept $ETC, $STATE and the smartbin user (use --purge to remove them)"
  fi
  [ -n "$PREFIX" ] || run systemctl daemon-reload
  exit 0
fi

[ -n "$BOARD" ] || BOARD=$(detect_board)
[ -n "$BOARD" ] || die "unknown board ($(uname -m)); pass --board one of: $BOARDS"
case " $BOARDS " in *" $BOARD "*) ;; *) die "unknown board '$BOARD' (allowed: $BOARDS)" ;; esac
case "$BOARD" in rpi*) EXTRAS=pi ;; jetson*) EXTRAS=jetson ;; *) EXTRAS=edge ;; esac
echo "board: $BOARD (extras: $EXTRAS)"

# 0. a board and a Python smartbin can run on; the lowest Python is setup.py's python_requires, stated once
if [ "$BOARD" = jetson-nano ]; then
  die "the Jetson Nano is not supported: its newest JetPack (4.6) ships Python 3.6 and NVIDIA's ONNX Runtime GPU wheels for it stop at Python 3.8, below what smartbin needs; a Jetson Orin with JetPack 6 (Python 3.10) is"
fi
MINPY=$(sed -n 's/.*python_requires=">=\([0-9.]*\)".*/\1/p' "$SRC/setup.py")
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || die "$PYTHON not found; install python3 ($MINPY or newer)"
if ! printf '%s\n%s\n' "$MINPY" "$PYVER" | sort -C -V; then
  die "$PYTHON is Python $PYVER; smartbin needs $MINPY or newer (Raspberry Pi OS 12 ships 3.11, JetPack 6 ships 3.10): pass --python with a newer one"
fi
# Boards whose camera (or GPU-enabled OpenCV) comes from the OS, not from pip: the venv sees the system's packages.
case "$BOARD" in rpi*|jetson*) VENV_ARGS=(--system-site-packages) ;; *) VENV_ARGS=() ;; esac

# 1. the service user, with the groups a camera and GPIO need
if [ -z "$PREFIX" ]; then
  if ! id smartbin >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/smartbin --shell /usr/sbin/nologin smartbin
  fi
  for group in video gpio render; do
    if getent group "$group" >/dev/null; then run usermod -aG "$group" smartbin; fi
  done
  # picamera2 needs libcamera's Python bindings, which only Raspberry Pi OS's packages provide
  if [ "$EXTRAS" = pi ] && ! "$PYTHON" -c 'import picamera2' 2>/dev/null; then
    run apt-get install -y python3-picamera2
  fi
fi

# 2. the package in its own virtual environment
if [ ! -x "$VENV/bin/smartbin" ]; then
  run "$PYTHON" -m venv "${VENV_ARGS[@]}" "$VENV"
fi
if [ "$VENV" = "$OPT/venv" ]; then
  pip_args=(--quiet --upgrade)
  [ -z "$FIND_LINKS" ] || pip_args+=(--no-index --find-links "$FIND_LINKS")
  # the versions tested together for this machine (constraints/refresh.sh), so bins installed apart match
  PINNED="$SRC/constraints/$(uname -m).txt"
  case "$BOARD" in jetson*) PINNED="$SRC/constraints/jetson.txt" ;; esac  # numpy 1.x there (setup.py says why)
  if [ -f "$PINNED" ]; then
    pip_args+=(-c "$PINNED")
  else
    echo "note: no pinned versions for $BOARD yet ($PINNED): pip takes the newest of each" >&2
  fi
  run "$VENV/bin/pip" install "${pip_args[@]}" "$SRC[$EXTRAS]"
fi

# 2b. what the board's camera and accelerator need, checked in the venv that will run the service.
# The OS's simplejpeg (picamera2's JPEG codec) is built for the OS's numpy 1.x, the venv has numpy 2:
# see systemd/venv-abi.sh for why the venv gets its own build rather than the OS's numpy.
if [ "$DRY" -eq 0 ] && [ "$EXTRAS" = pi ]; then
  "$SRC/systemd/venv-abi.sh" "$VENV" ${FIND_LINKS:+--find-links "$FIND_LINKS"} simplejpeg || true
fi
if [ "$DRY" -eq 0 ] && [ "$EXTRAS" = pi ] && ! "$VENV/bin/python" -c 'import picamera2' 2>/dev/null; then
  echo "warning: picamera2 cannot be imported in $VENV; csi:// cameras will not work. On Raspberry Pi OS:" >&2
  echo "  sudo apt install python3-picamera2, and create the venv with --system-site-packages" >&2
fi
if [ "$DRY" -eq 0 ] && [ "$EXTRAS" = jetson ]; then
  providers=$("$VENV/bin/python" -c 'import onnxruntime as o; print(" ".join(o.get_available_providers()))' 2>/dev/null || true)
  case "$providers" in
    *TensorrtExecutionProvider*|*CUDAExecutionProvider*) echo "onnxruntime providers: $providers" ;;
    *) echo "warning: onnxruntime has no TensorRT or CUDA provider here ($providers); install NVIDIA's" \
         "onnxruntime-gpu wheel for your JetPack (https://elinux.org/Jetson_Zoo#ONNX_Runtime) into $VENV" >&2 ;;
  esac
fi

# 3. config (never overwritten) and model bundle
run mkdir -p "$ETC" "$STATE/models" "$UNITS"
run chmod 0750 "$ETC"  # the unit's ConfigurationDirectoryMode; the config may name secrets' files
if [ ! -f "$ETC/config.yaml" ]; then
  run install -m 0640 "$SRC/firmware_config/$BOARD.yaml" "$ETC/config.yaml"
else
  echo "kept existing $ETC/config.yaml"
fi
# the bin's name on the broker: two bins must not share one (the broker would keep kicking one off)
if [ "$DRY" -eq 0 ]; then
  if ident=$("$VENV/bin/python" -c 'import sys; from edge.config import load_config as l; c = l(sys.argv[1]); print(c.device_id, c.topic_base)' "$ETC/config.yaml" 2>/dev/null); then
    echo "device id: ${ident%% *} (topics ${ident#* }/...; set device_id in $ETC/config.yaml to choose another)"
  else
    echo "warning: $ETC/config.yaml does not load yet; see: $VENV/bin/smartbin config check $ETC/config.yaml" >&2
  fi
fi
# 3b. what the configured model needs: an ONNX variant runs on ONNX Runtime, which [edge] and [pi] leave out
if [ "$VENV" = "$OPT/venv" ] && [ -x "$VENV/bin/python" ] && [ "$EXTRAS" != jetson ] &&
  "$VENV/bin/python" -c 'import sys; from edge.config import load_config as l; sys.exit(not l(sys.argv[1]).model.runs_onnx)' "$ETC/config.yaml" 2>/dev/null; then
  run "$VENV/bin/pip" install "${pip_args[@]}" "$SRC[$EXTRAS,onnx]"
fi
if [ -n "$BUNDLE" ]; then
  [ -f "$BUNDLE/manifest.json" ] || die "$BUNDLE is not a model bundle (no manifest.json); make one with 'smartbin convert'"
  # the store's own rule (edge/models/store.py): copied in, verified, made current and recorded
  run "$VENV/bin/smartbin" bundle install "$BUNDLE" --store "$STATE/models"
fi

# 4. units, pointing at this venv, with only the supplementary groups this board has
# (systemd refuses to start a unit whose group does not exist: status 216/GROUP)
existing_groups() {
  local out="" group
  for group in "$@"; do getent group "$group" >/dev/null && out="$out $group"; done
  echo "${out# }"
}
for unit in smartbin-edge.service smartbin-actuator.service; do
  wanted=$(sed -n 's/^SupplementaryGroups=//p' "$SRC/systemd/$unit")
  # shellcheck disable=SC2086 # a list of names
  groups=$(existing_groups $wanted)
  echo "+ install $unit -> $UNITS/$unit (groups: ${groups:-none})"
  if [ "$DRY" -eq 0 ]; then
    if [ -n "$groups" ]; then line="SupplementaryGroups=$groups"; else line="# SupplementaryGroups: none of $wanted here"; fi
    sed -e "s#/opt/smartbin/venv#$VENV#g" -e "s|^SupplementaryGroups=.*|$line|" "$SRC/systemd/$unit" >"$UNITS/$unit"
    chmod 0644 "$UNITS/$unit"
  fi
done

case "$BOARD" in
  jetson*)  # the CSI camera's argus socket lives in the host's /tmp
    run install -D -m 0644 "$SRC/systemd/jetson-camera.conf" "$UNITS/smartbin-edge.service.d/$JETSON_DROP_IN" ;;
esac

if [ -z "$PREFIX" ]; then
  run chown -R smartbin:smartbin "$STATE"
  run chown root:smartbin "$ETC" "$ETC/config.yaml"
  run systemctl daemon-reload
  run systemctl enable --now smartbin-edge.service
  echo "done: journalctl -fu smartbin-edge   and   mosquitto_sub -t 'smartbin/#' -v"
else
  echo "installed under $PREFIX"
fi
