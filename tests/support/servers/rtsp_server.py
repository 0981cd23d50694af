"""An RTSP camera from Debian's GStreamer RTSP server (gir1.2-gst-rtsp-server-1.0), run by the system Python.

``/usr/bin/python3 tests/support/servers/rtsp_server.py PORT [PATTERN]`` serves a test pattern as RTP/JPEG at
rtsp://127.0.0.1:PORT/live and prints "ready" once it listens: a moving ball by default, or another of
videotestsrc's patterns (``solid-color`` and ``smpte`` stand still: an empty bin that nothing drops into).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PATTERN = sys.argv[2] if len(sys.argv) > 2 else "ball"
PIPELINE = (
    f"( videotestsrc is-live=true pattern={PATTERN} ! video/x-raw,width=320,height=240,framerate=15/1 "
    "! videoconvert ! video/x-raw,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(PIPELINE)
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
sys.stdout.write("ready\n")
sys.stdout.flush()
GLib.MainLoop().run()
