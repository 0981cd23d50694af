#!/usr/bin/env bash
# `make arm64-check`: smartbin[edge] on aarch64 code, as on a Raspberry Pi or a Jetson.
#
# A Debian arm64 root (debootstrap, cached in .cache/arm64-root) run under qemu-user-static:
# `pip install ".[edge]"` must resolve and install there, `smartbin predict` must give the same
# top-1 as this machine does on a real photograph (matplotlib's Grace Hopper), and
# `edge/bench.py --modes invoke` must run the int8 bundle on LiteRT, and a bundle in two parts (the
# backbone on LiteRT, the head in numpy) must give the same top-1 there as here too. Timings under
# emulation mean nothing, so none are printed. Needs root, network for the first debootstrap and pip install,
# and: apt-get install binfmt-support debootstrap; apt-get install -t bookworm-backports qemu-user-static.
#
#   tests/arm64_check.sh BUNDLE IMAGE HOST_PYTHON [SPLIT_BUNDLE]
set -euo pipefail

BUNDLE=${1:?bundle folder}
IMAGE=${2:?a real photograph}
HOST_PYTHON=${3:?the host venv python}
SPLIT=${4:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOTFS="$SRC/.cache/arm64-root"
die() { echo "arm64-check: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root (chroot, mounts, binfmt)"
for tool in debootstrap qemu-aarch64-static chroot; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install qemu-user-static binfmt-support debootstrap"
done

# 1. a qemu that runs LiteRT: bookworm's 7.2 segfaults inside LiteRT 2.3's aarch64 code (LiteRT 1.4 runs
#    there); bookworm-backports' 10.0 runs both.
qemu_major=$(qemu-aarch64-static --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
[ "${qemu_major:-0}" -ge 8 ] || die "qemu-user-static ${qemu_major:-?}.x crashes in LiteRT 2.3's aarch64 code;" \
  "install 10.0 from bookworm-backports: apt-get install -t bookworm-backports qemu-user-static"
# The kernel runs aarch64 binaries through qemu (binfmt_misc). The F flag pins the interpreter file that
# was there at registration, so register again: an upgraded qemu would otherwise not be the one running.
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || echo -1 >/proc/sys/fs/binfmt_misc/qemu-aarch64
# qemu 9 and later (bookworm-backports' 10.0) register through systemd-binfmt's file, not update-binfmts.
conf=/usr/lib/binfmt.d/qemu-aarch64.conf
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || { [ -f "$conf" ] && grep -v '^#' "$conf" >/proc/sys/fs/binfmt_misc/register; } ||
  die "cannot register qemu-aarch64 with binfmt_misc"

# 2. a Debian arm64 root with Python, once
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  rm -rf "$ROOTFS.tmp"
  echo "debootstrap: Debian bookworm arm64 into $ROOTFS (once; minutes)"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >/dev/null
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

# 3. the source, the bundle and the image inside; the host's name resolution and pip settings for the install
rm -rf "$ROOTFS/root/src" "$ROOTFS/root/bundle" "$ROOTFS/root/split" "$ROOTFS/root/images"
mkdir -p "$ROOTFS/root/src" "$ROOTFS/root/images" "$ROOTFS/root/.config"
(cd "$SRC" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$ROOTFS/root/src"
cp -r "$BUNDLE" "$ROOTFS/root/bundle"
[ -z "$SPLIT" ] || cp -r "$SPLIT" "$ROOTFS/root/split"
cp "$IMAGE" "$ROOTFS/root/images/"
cp -L /etc/resolv.conf /etc/hosts "$ROOTFS/etc/"
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/"  # trust what this host's pip trusts (a mirror's CA)
[ ! -d "$HOME/.config/pip" ] || cp -r "$HOME/.config/pip" "$ROOTFS/root/.config/"
[ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$ROOTFS/etc/"

mounts=()
cleanup() { for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done; }
trap cleanup EXIT
for fs in proc sys dev; do
  mount --bind "/$fs" "$ROOTFS/$fs"
  mounts+=("$ROOTFS/$fs")
done
inside() { chroot "$ROOTFS" env -i HOME=/root PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

machine=$(inside python3 -c 'import platform; print(platform.machine())')
[ "$machine" = aarch64 ] || die "the root runs as $machine, not aarch64"
echo "arm64 root: $(inside python3 --version) on $machine (qemu-user)"

# 4. the install a Pi owner runs (system site packages, as install.sh does on a Pi)
[ -x "$ROOTFS/opt/venv/bin/pip" ] || inside python3 -m venv --system-site-packages /opt/venv
inside pip install --quiet --upgrade -c /root/src/constraints/aarch64.txt "/root/src[edge]" >"$ROOTFS/root/pip.log" 2>&1 || {
  grep -v '^WARNING: Location' "$ROOTFS/root/pip.log" >&2
  die "pip install \".[edge]\" failed on aarch64"
}
versions=$(inside python -c 'import importlib.metadata as m; print(" ".join(f"{p}=={m.version(p)}" for p in ("smartbin", "ai-edge-litert", "numpy", "opencv-python-headless")))')
echo "installed on aarch64: $versions"

# 5. the same photograph, the same bundle: the same top-1 on aarch64 kernels as on this machine's; for a
#    bundle in two parts too (its head runs in numpy's aarch64 loops)
name=$(basename "$IMAGE")
same_prediction() {  # what: the bundle's name; inside and host: its folder there and here
  local arm host
  arm=$(inside smartbin predict "$2" "/root/images/$name" --json)
  host=$("$HOST_PYTHON" -m edge.cli predict "$3" "$IMAGE" --json)
  python3 - "$arm" "$host" "$name" "$(uname -m)" "$1" <<'EOF'
import json, sys
arm, host = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"predict {sys.argv[3]} with {sys.argv[5]}: aarch64 {arm['label']} ({arm['confidence']:.3f}), "
      f"{sys.argv[4]} {host['label']} ({host['confidence']:.3f})")
assert arm["label"] == host["label"], "top-1 differs between aarch64 and this machine"
# the same int8 arithmetic: at most a few quantization steps (1/256) apart
assert abs(arm["confidence"] - host["confidence"]) <= 0.02, "confidence differs by more than 0.02"
EOF
}
same_prediction "the bundle" /root/bundle "$BUNDLE"
[ -z "$SPLIT" ] || same_prediction "the bundle in two parts" /root/split "$SPLIT"

# 6. the benchmark's invoke mode on the int8 model (timings are not figures under emulation: not shown)
inside python /root/src/edge/bench.py --bundle /root/bundle --variants int8 --modes invoke --runs 3 --warmup 1 \
  --json /root/bench.json >/dev/null 2>"$ROOTFS/root/bench.err" || { cat "$ROOTFS/root/bench.err" >&2; die "bench failed"; }
python3 - "$ROOTFS/root/bench.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
rows = [r for r in report["results"] if r["mode"] == "invoke" and r["variant"] == "int8"]
assert rows and rows[0]["status"] == "ok", rows or f"no int8 invoke row in {sys.argv[1]}"
env = report["environment"]
assert env["machine"] == "aarch64", env["machine"]
print(f"bench on {env['machine']} ({env['cpu']}): int8 invoke on {rows[0]['backend']}, status ok, "
      "3 runs; timings under emulation mean nothing and are not shown")
EOF
echo "arm64-check: passed"
