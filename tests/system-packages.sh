#!/usr/bin/env bash
# The Debian packages the tests use, installed when this user may (root, or sudo without a password);
# otherwise one line says what to run, and the tests that need them skip, each saying why.
#   mosquitto(-clients): the real broker; openssl: TLS certificates; systemd: systemd-analyze;
#   systemd-container: systemd-nspawn for tests/test_real_systemd.py; chromium(-driver): the status page;
#   ffmpeg: an MJPEG-over-HTTP camera; python3-gi + gir1.2-gst-rtsp-server-1.0 + GStreamer plugins: an
#   RTSP camera; busybox: httpd for the update tests; python3-numpy + python3-bottleneck: a module built
#   for numpy 1.x (tests/test_pi_venv.py); qemu-user: an x86 CPU without AVX-512 or VNNI, emulated, for the int8
#   ONNX kernels of such a CPU (tests/test_quantization.py); rabbitmq-server: a broker that speaks MQTT 3.1.1
#   only (tests/actuator/test_clocks_311.py); make and python3-venv: the two commands themselves.
set -uo pipefail
PACKAGES="make python3-venv mosquitto mosquitto-clients openssl systemd systemd-container chromium chromium-driver
ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good busybox
python3-numpy python3-bottleneck qemu-user rabbitmq-server"
if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  echo "system packages: not a Debian-like system; tests that need them skip, saying why (README: Testing)"
  exit 0
fi
missing=""
for package in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
[ -n "$missing" ] || exit 0
if [ "$(id -u)" -eq 0 ]; then
  sudo=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo="sudo -n"
else
  echo "system packages missing; to run every test: sudo apt-get install -y$missing"
  exit 0
fi
echo "installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # a list of package names
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
  echo "apt-get could not install them; tests that need them skip, saying why"
fi
exit 0
