"""Who the review station answers, as a user meets it: on 127.0.0.1 only requests addressed to this machine by
a loopback name (a DNS-rebinding page names its own host) and, for anything that changes something, the token
the page was served with; on another address only with a password, which it refuses to start without."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

from edge.tools.localbroker import free_port
from tests.support import ROOT, poll
from tests.support.review import answer_of, request, reviewing

SAMPLE = "000001790000000-abcdefabcdef"


def samples(tmp_path):
    import cv2
    import numpy as np

    folder = tmp_path / "samples"
    folder.mkdir()
    cv2.imwrite(str(folder / f"{SAMPLE}.jpg"), np.full((8, 8, 3), 128, np.uint8))
    meta = {"event_id": "abcdefabcdef" + "0" * 20, "ts": 1790000000.0, "label": "can", "bin": "recyclable"}
    (folder / f"{SAMPLE}.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def test_only_its_own_page_on_its_own_name_changes_anything(tmp_path, closing):
    folder = samples(tmp_path)
    url = closing.enter_context(reviewing(folder))
    port = url.rsplit(":", 1)[1].strip("/")
    answer = {"ids": [SAMPLE], "verdict": "not_item"}
    # a page elsewhere that knows the JSON API but not the token the station's own page carries
    assert request(url + "api/answer", answer, {"X-Review-Token": ""})[0] == 403
    assert request(url + "api/answer", answer, {"X-Review-Token": "guessed"})[0] == 403
    # DNS rebinding: the browser sends the attacker's host name, here resolved to 127.0.0.1
    rebound = {"Host": f"evil.example:{port}"}
    assert request(url + "api/items", headers=rebound)[0] == 421
    assert request(url + "api/answer", answer, rebound)[0] == 421
    assert answer_of(folder, SAMPLE) is None
    assert request(url + "api/answer", answer)[0] == 200 and answer_of(folder, SAMPLE)["verdict"] == "not_item"
    assert request(url.replace("127.0.0.1", "localhost") + "api/items")[0] == 200


def test_another_address_needs_a_password(tmp_path):
    folder = samples(tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "edge.cli", "review", str(folder), "--host", "0.0.0.0", "--port", str(port)]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--password-env" in refused.stderr and "Traceback" not in refused.stderr
    env = {**os.environ, "REVIEW_PASSWORD": "pw-for-test"}
    process = subprocess.Popen([*command, "--password-env", "REVIEW_PASSWORD"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        assert poll(lambda: _status(url) == 401, 60)  # up, and closed without the password
        authorised = {"Authorization": "Basic " + base64.b64encode(b"smartbin:pw-for-test").decode()}
        assert request(url + "api/items", headers=authorised)[0] == 200
        wrong = {"Authorization": "Basic " + base64.b64encode(b"smartbin:nope").decode()}
        assert _status(url, wrong) == 401
    finally:
        process.terminate()
        process.wait(15)


def _status(url: str, headers: dict | None = None) -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_two_tabs_moving_classes_at_once_keep_every_move(tmp_path):
    """The bins file written whole and under the store's lock: eight tabs, each moving its own class twenty
    times, leave all eight moves (a read-modify-write without the lock loses some)."""
    import threading

    import yaml

    from convert.review.store import ReviewStore

    store = ReviewStore(samples(tmp_path))
    labels = [f"class-{i}" for i in range(8)]

    def move(label: str) -> None:
        for n in range(20):
            store.set_bin(label, ("recyclable", "kitchen")[n % 2])

    threads = [threading.Thread(target=move, args=(label,)) for label in labels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    written = yaml.safe_load((store.folder / "bins.yaml").read_text(encoding="utf-8"))
    assert {label: written.get(label) for label in labels} == dict.fromkeys(labels, "kitchen")
