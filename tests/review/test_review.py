"""The review station (`smartbin review`) as a user meets it: real samples that a running daemon kept,
`smartbin review` started from the command line, a real Chromium driven from the keyboard (one answer,
"not an item", a bulk label for a selection, "unsure"), the page closed and opened again with every answer
still there, a class moved to another bin beside the grid, then `smartbin samples pull` making the
dataset from the answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.cli import main
from tests.support.browser import chromium, needs_chromium, script_errors
from tests.support.realimages import PHOTOS
from tests.support.review import answer_of, kept_samples, request, reviewing

pytestmark = pytest.mark.slow


@needs_chromium
def test_review_label_in_bulk_from_the_keyboard_keep_it_and_pull_it(
    tmp_path, bundle_dir, broker, clip_factory, artifacts, closing
):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    clip, _ = clip_factory(items=4)
    folder = kept_samples(tmp_path, bundle_dir, broker.port, clip)
    total = len(list(folder.glob("*.json")))
    url = closing.enter_context(reviewing(folder))
    driver = None
    try:
        driver = chromium(tmp_path, "1400,1000")
        driver.get(url)
        wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == total)
        assert script_errors(driver) == []
        items = {i["id"]: i for i in request(url + "api/items")[1]["items"]}

        def focused() -> str:
            return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".card.focus").get_attribute("data-id"))

        def press(*keys: str) -> None:
            ActionChains(driver).send_keys(*keys).perform()

        def saved(sample_id: str) -> dict:
            return wait.until(lambda d: answer_of(folder, sample_id))

        def shown(count: int) -> None:  # the page redrew after the answer: answered cards left the view
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == count)

        # 1: the model's own guess is right
        first = focused()
        press("1")
        got = saved(first)
        assert (got["verdict"], got["label"], got["by"]) == ("item", items[first]["guesses"][0], "review")
        # the answered card leaves the "not answered" view; the next one has the focus
        shown(total - 1)
        empty = focused()
        press("n")
        assert saved(empty)["verdict"] == "not_item" and saved(empty)["label"] is None
        shown(total - 2)
        # a selection of two (space, then shift+right), labelled at once with a label typed after /
        pair = [focused()]
        press(" ")
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ARROW_RIGHT).key_up(Keys.SHIFT).perform()
        pair.append(focused())
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card.selected")) == 2)
        press("/")
        assert driver.switch_to.active_element.get_attribute("id") == "label"
        press("paper cup", Keys.ENTER)
        assert [saved(i)["label"] for i in pair] == ["paper cup", "paper cup"]
        shown(total - 4)
        unsure = focused()
        press("u")
        assert saved(unsure)["verdict"] == "unsure"
        shown(total - 5)
    finally:
        if driver:
            driver.quit()
    driver = None
    try:  # the page closed and opened again: every answer is there, from the files
        driver = chromium(tmp_path, "1400,1000")
        driver.get(url)
        wait = WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card")) == total - 5)
        Select(driver.find_element(By.ID, "f-state")).select_by_value("done")
        answers = wait.until(
            lambda d: (
                (cards := d.find_elements(By.CSS_SELECTOR, ".card")) and len(cards) == 5 and [c.text for c in cards]
            )
        )
        assert sum("→ paper cup" in a for a in answers) == 2 and sum("not an item" in a for a in answers) == 1
        # the new class goes to a bin beside the grid: saved in the folder's bins.yaml
        cup = driver.find_element(By.CSS_SELECTOR, 'select.bin[data-label="paper cup"]')
        Select(cup).select_by_visible_text("recyclable")
        wait.until(lambda d: "paper cup → recyclable" in d.find_element(By.ID, "status").text)
        driver.save_screenshot(str(artifacts / "review_station.png"))
    finally:
        if driver:
            driver.quit()
    assert "paper cup: recyclable" in (folder / "bins.yaml").read_text(encoding="utf-8")
    # the dataset from the answers: the two answered items and the pair; not the empty frame; unsure unreviewed
    assert main(["samples", "pull", str(folder), "--out", str(tmp_path / "data")]) == 0
    record = json.loads((tmp_path / "data" / "field_samples.json").read_text(encoding="utf-8"))
    assert sorted(r["label"] for r in record) == sorted([items[first]["guesses"][0], "paper cup", "paper cup"])
    rules = json.loads((tmp_path / "data" / "garbage_classify_rule.json").read_text(encoding="utf-8"))
    assert "recyclable/paper cup" in rules.values()
    unreviewed = json.loads((tmp_path / "data" / "unreviewed" / "field_samples.json").read_text(encoding="utf-8"))
    assert len(unreviewed) == total - 4  # all but the four items answered, the unsure one among them


def test_the_review_api_saves_nothing_it_should_not(tmp_path, closing):
    """A page elsewhere, a bad verdict, an unknown sample or bin change nothing."""
    import cv2
    import numpy as np

    folder = tmp_path / "samples"
    folder.mkdir()
    sample_id = "000001790000000-abcdefabcdef"
    cv2.imwrite(str(folder / f"{sample_id}.jpg"), np.full((8, 8, 3), 128, np.uint8))
    meta = {"event_id": "abcdefabcdef" + "0" * 20, "ts": 1790000000.0, "label": "can", "bin": "recyclable"}
    (folder / f"{sample_id}.json").write_text(json.dumps(meta), encoding="utf-8")
    url = closing.enter_context(reviewing(folder))
    answer = {"ids": [sample_id], "verdict": "not_item"}
    assert request(url + "api/answer", answer, {"Origin": "http://evil.example"})[0] == 403
    assert request(url + "api/answer", {**answer, "verdict": "maybe"})[0] == 400
    assert request(url + "api/answer", {**answer, "ids": [sample_id, "000001790000001-nothere"]})[0] == 400
    assert request(url + "api/answer", {**answer, "verdict": "item"})[0] == 400  # an item needs its label
    assert request(url + "api/bins", {"label": "can", "bin": "compost"})[0] == 400
    assert answer_of(folder, sample_id) is None and not (folder / "bins.yaml").exists()
    status, body = request(url + "api/answer", answer)
    assert status == 200 and body["items"][0]["answer"]["verdict"] == "not_item"
    assert answer_of(folder, sample_id)["verdict"] == "not_item"


def test_review_ranks_what_looks_new_to_the_model_first(tmp_path, run_dir, bundle_dir, broker, clip_factory, closing):
    """With --rank-with, photographs unlike anything the run trained on (scikit-image's, among the bin's own
    frames, each with a frame's metadata) look newer than the frames, and the most novel sample is worth more of
    a look than the same metadata on a familiar frame by novelty's share. (The suite's run has a stand-in
    backbone: its features see colour and texture, not objects; the distances are small, the order is not.)"""
    import statistics

    import cv2
    import skimage.data

    clip, _ = clip_factory(items=4)
    folder = kept_samples(tmp_path, bundle_dir, broker.port, clip)
    frames = [p.stem for p in sorted(folder.glob("*.json"))]
    source = folder / f"{frames[0]}.json"
    photos = {}
    for n, name in enumerate(PHOTOS):
        image = getattr(skimage.data, name)()
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[:, :, :3]
        photos[f"99999999999999{n}-{name[:12]}"] = image
    for sample_id, image in photos.items():
        (folder / f"{sample_id}.json").write_bytes(source.read_bytes())
        assert cv2.imwrite(str(folder / f"{sample_id}.jpg"), cv2.resize(image[:, :, ::-1], (320, 240)))
    url = closing.enter_context(reviewing(folder, "--rank-with", str(run_dir)))
    items = {i["id"]: i for i in request(url + "api/items")[1]["items"]}
    novelty = {i: items[i]["novelty"] for i in items}
    assert set(novelty) == set(frames) | set(photos) and None not in novelty.values()
    assert statistics.median(novelty[p] for p in photos) > statistics.median(novelty[f] for f in frames), novelty
    most = max(novelty, key=novelty.get)
    assert most in photos, novelty
    # the same metadata: the worth differs by novelty's share (its place among the folder's, 0 to 1)
    familiar = sum(d < novelty[frames[0]] for d in novelty.values()) / (len(novelty) - 1)
    expected = 1.0 - familiar
    assert abs(items[most]["worth"] - items[frames[0]]["worth"] - expected) < 1e-3
    assert json.loads((folder / "novelty.json").read_text(encoding="utf-8"))[0]["image"] == f"{most}.jpg"
