#!/usr/bin/env bash
# `make clean-install-check`: the README's "Flash and run it on a bin" commands, as written, on a Debian
# that never saw smartbin, this repository or its developers' machine.
#
# A Debian bookworm root made by debootstrap (cached in .cache/clean-root: only what a minimal server
# install has, plus sudo, Python's venv and a mosquitto to talk to) is booted with systemd as PID 1
# (systemd-nspawn, its own network namespace). Inside it, in a copy of the repository's tracked files, the
# README's command lines run one by one as root would type them; pip installs from the offline wheel
# cache (`make wheels`) through /etc/pip.conf, as it would through a mirror. Then the service must be
# active and its retained status online with the model, on the root's own broker (no camera here: the
# status says camera_lost, the unit stays up). Needs root, debootstrap, systemd-nspawn and, for the first
# debootstrap, a Debian mirror.
#
#   tests/clean_install_check.sh BUNDLE WHEELS
set -euo pipefail

BUNDLE=${1:?bundle folder}
WHEELS=${2:?the offline wheel cache (make wheels)}
SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOTFS="$SRC/.cache/clean-root"
NAME=smartbin-clean
die() { echo "clean-install-check: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, systemd-nspawn)"
for tool in debootstrap systemd-nspawn nsenter; do
  command -v "$tool" >/dev/null || die "$tool is missing: apt-get install debootstrap systemd-container"
done
[ -f "$BUNDLE/manifest.json" ] || die "$BUNDLE is not a bundle"
ls "$WHEELS"/*.whl >/dev/null 2>&1 || die "$WHEELS has no wheels: make wheels"

# 1. a Debian that never saw smartbin, once
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  rm -rf "$ROOTFS.tmp"
  echo "debootstrap: Debian bookworm into $ROOTFS (once; minutes)"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,sudo,python3,python3-venv,ca-certificates,mosquitto,mosquitto-clients \
    bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >/dev/null
  mv "$ROOTFS.tmp" "$ROOTFS"
fi

# 2. a fresh copy of it for this run: the repository as a user clones it, the bundle where the README has it
RUN="$SRC/.cache/clean-run"
rm -rf "$RUN"
cp -a "$ROOTFS" "$RUN"
mkdir -p "$RUN/root/smartbin/models" "$RUN/srv/wheels"
(cd "$SRC" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$RUN/root/smartbin"
cp -r "$BUNDLE" "$RUN/root/smartbin/models/r1"
cp "$WHEELS"/*.whl "$RUN/srv/wheels/"
printf '[global]\nno-index = true\nfind-links = /srv/wheels\n' >"$RUN/etc/pip.conf"
echo "$NAME" >"$RUN/etc/hostname"
# debootstrap writes no /etc/hosts; Debian's installer (and Pi OS, and every cloud image) does, and without
# it neither sudo nor the broker's "localhost" resolves
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$NAME" >"$RUN/etc/hosts"
rm -f "$RUN/etc/machine-id"

# 3. boot it
LOG="$SRC/.cache/clean-run.console.log"
systemd-nspawn -D "$RUN" -M "$NAME" --register=no --keep-unit --private-network -b --console=pipe \
  >"$LOG" 2>&1 </dev/null &
NSPAWN_PID=$!
leader=""
cleanup() {
  [ -z "$leader" ] || kill -s RTMIN+4 "$leader" 2>/dev/null || true
  wait "$NSPAWN_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 600); do
  leader=$(pgrep -P "$NSPAWN_PID" | head -1 || true)
  [ -z "$leader" ] || break
  kill -0 "$NSPAWN_PID" 2>/dev/null || die "the container did not boot: $(tail -20 "$LOG")"
  sleep 0.1
done
inside() {
  nsenter -t "$leader" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 /bin/sh -c "$1"
}
# PID 1 answers on its bus only once it is up: until then systemctl says "Failed to connect to bus"
state=""
for _ in $(seq 120); do
  state=$(inside "systemctl is-system-running --wait" 2>/dev/null || true)
  [ -z "$state" ] || break
  sleep 0.5
done
case "$state" in running | degraded) ;; *) die "the container's systemd is '$state', not running" ;; esac
echo "booted: $(inside '. /etc/os-release; echo $PRETTY_NAME'), systemd $state, $(inside 'python3 --version')"

# 4. the README's lines, as written (sudoedit opens an editor: the defaults already name this root's broker)
commands=$(sed -n '/^## Flash and run it on a bin/,/^```$/p' "$SRC/README.md" | sed -n '/^```sh$/,/^```$/p' |
  sed '1d;$d' | sed 's/[[:space:]]*#.*$//' | grep -v '^sudoedit ')
[ -n "$commands" ] || die "no commands found under the README's 'Flash and run it on a bin'"
while IFS= read -r line; do
  [ -n "$line" ] || continue
  case "$line" in *"journalctl -f"*) line="${line/journalctl -fu/journalctl --no-pager -n 20 -u}" ;; esac
  echo "\$ $line"
  inside "cd /root/smartbin && $line" || die "the README's line failed: $line"
done <<<"$commands"

# 5. what the user expects then: the service up, its retained status online with the model
for _ in $(seq 60); do
  [ "$(inside 'systemctl is-active smartbin-edge' || true)" = active ] && break
  sleep 1
done
[ "$(inside 'systemctl is-active smartbin-edge' || true)" = active ] ||
  die "smartbin-edge is not active: $(inside 'journalctl --no-pager -n 40 -u smartbin-edge')"
status=$(inside "mosquitto_sub -h 127.0.0.1 -t 'smartbin/+/status' -C 1 -W 60") ||
  die "no retained status on the root's broker: $(inside 'journalctl --no-pager -n 40 -u smartbin-edge')"
echo "retained status: $status"
python3 - "$status" <<'EOF'
import json, sys

status = json.loads(sys.argv[1])
assert status["state"] == "online", status
assert status["model"]["name"], status
assert status["health"] in ("ok", "camera_lost", "degraded"), status
print(f"clean-install-check: passed ({status['model']['name']} {status['model']['variant']} on {status['backend']}, "
      f"health {status['health']})")
EOF
