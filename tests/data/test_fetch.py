"""`smartbin samples fetch` against a bin page that lies: names that climb out of the folder or are absolute,
a reply far larger than any sample, a JSON that is not a sample, a "JPEG" that is not one, a listing that is not
a listing. Only the honest sample is written, nothing lands outside the folder, and what the folder held
(answers given there) is untouched. The page is a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.formats.images import encode_jpeg

GOOD, KEPT = "001765000000000-0123456789ab", "001765000000001-ba9876543210"
JPEG = encode_jpeg(np.full((8, 8, 3), 120, np.uint8))


def sample(event_id: str, label: str = "can") -> bytes:
    return json.dumps({"event_id": event_id, "ts": 1765000000.0, "label": label}).encode()


def hostile_page(replies: dict[str, bytes]) -> ThreadingHTTPServer:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = replies.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_fetch_writes_only_honest_samples_inside_the_folder(tmp_path: Path, capsys):
    climbing = ["../../escaped", "/tmp/absolute", "..", "001765000000002-0123456789ab/../../x", 7, None]
    big, not_json, not_jpeg = (
        "001765000000003-aaaaaaaaaaaa",
        "001765000000004-bbbbbbbbbbbb",
        "001765000000005-cccccccccccc",
    )
    names = [GOOD, KEPT, big, not_json, not_jpeg, *climbing]
    replies = {"/api/samples": json.dumps({"samples": names}).encode()}
    for name in (GOOD, KEPT):
        replies |= {f"/samples/{name}.jpg": JPEG, f"/samples/{name}.json": sample(name.split("-")[1] * 2)}
    replies |= {f"/samples/{big}.jpg": b"\xff\xd8" + b"\0" * (17 * 2**20), f"/samples/{big}.json": sample("a" * 24)}
    replies |= {f"/samples/{not_json}.jpg": JPEG, f"/samples/{not_json}.json": b'{"label": "no event id"}'}
    replies |= {f"/samples/{not_jpeg}.jpg": b"<html>", f"/samples/{not_jpeg}.json": sample("c" * 24)}
    for name in climbing:  # served too, should anyone ask
        replies |= {f"/samples/{name}.jpg": JPEG, f"/samples/{name}.json": sample("d" * 24)}
    folder = tmp_path / "review" / "inbox"
    folder.mkdir(parents=True)
    answered = sample("ba9876543210" * 2, label="answered here")
    (folder / f"{KEPT}.json").write_bytes(answered)
    (folder / f"{KEPT}.jpg").write_bytes(JPEG)
    server = hostile_page(replies)
    try:
        code = main(["samples", "fetch", f"http://127.0.0.1:{server.server_port}", "--out", str(folder)])
    finally:
        server.shutdown()
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{GOOD}.jpg", f"{GOOD}.json", f"{KEPT}.jpg", f"{KEPT}.json"]
    )
    assert (folder / f"{KEPT}.json").read_bytes() == answered  # the answer given here stays
    everything = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert everything == {Path("review"), Path("review/inbox"), *(p.relative_to(tmp_path) for p in folder.iterdir())}
    assert not Path("/tmp/absolute.jpg").exists()
    assert "1 new sample(s)" in capsys.readouterr().out


@pytest.mark.parametrize("listing", [b"<html>not json</html>", b'{"samples": "all of them"}', b"[1, 2]"])
def test_a_page_that_is_no_sample_listing_is_one_clear_error(tmp_path: Path, listing: bytes, capsys):
    server = hostile_page({"/api/samples": listing})
    try:
        code = main(["samples", "fetch", f"http://127.0.0.1:{server.server_port}", "--out", str(tmp_path / "inbox")])
    finally:
        server.shutdown()
    assert code != 0 and "not a sample listing" in capsys.readouterr().err
    assert not (tmp_path / "inbox").exists() or not any((tmp_path / "inbox").iterdir())
