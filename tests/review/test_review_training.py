"""Training and rolling out from the review station, as a user meets it: samples a running daemon kept,
answered on the page's API, `smartbin review` started with what a training needs and the bins' broker, then in
Chromium "train on the answers": the step and epoch shown while it runs, a second start refused meanwhile, then
the new model beside the bins' on the same hold-out and the training report one click away; then the fleet of
two real daemons listed from the broker and the new bundle rolled out to them in two stages."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from edge.cli import main
from edge.formats.bundle import Bundle
from edge.formats.dataset import load_dataset
from tests.support import BACKBONE, IMG_SIZE, poll
from tests.support.browser import chromium, needs_chromium, script_errors
from tests.support.fleet import running_fleet, serving
from tests.support.review import kept_samples, request, reviewing

pytestmark = pytest.mark.slow
EPOCHS = 3
BINS = ("bin-a", "bin-b")


@needs_chromium
def test_train_from_the_page_to_a_report_and_a_comparison(
    tmp_path, bundle_dir, dataset_dir, weights_file, broker, clip_factory, artifacts, closing
):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    clip, _ = clip_factory(items=4)
    folder = kept_samples(tmp_path, bundle_dir, broker.port, clip)
    split = tmp_path / "split"
    assert main(["dataset", "split", str(dataset_dir), "--out", str(split), "--holdout", "0.25"]) == 0
    train = f"--weights {weights_file} --backbone {BACKBONE} --img-size {IMG_SIZE} --epochs {EPOCHS} --batch-size 16"
    options = ["--train-data", str(split / "train"), "--holdout", str(split / "holdout"), "--baseline", str(bundle_dir)]
    options += ["--train-args", f"{train} --val-fraction 0.25", "--convert-args", "--no-probes --calib-samples 50"]
    options += ["--broker", f"127.0.0.1:{broker.port}", "--serve", "127.0.0.1:0"]  # to roll out from the page
    url = closing.enter_context(reviewing(folder, *options))
    driver = None
    try:
        sub = closing.enter_context(running_fleet(tmp_path / "bins", bundle_dir, clip, broker.port, BINS)).sub
        items = request(url + "api/items")[1]["items"]
        for item in items:  # each answered with the model's own guess
            assert request(url + "api/answer", {"ids": [item["id"]], "verdict": "item", "label": item["guesses"][0]})[0]
        driver = chromium(tmp_path, "1400,1500")  # tall enough for the rollout's lines in the screenshot
        driver.get(url)
        wait = WebDriverWait(driver, 600, 0.2, ignored_exceptions=(StaleElementReferenceException,))
        wait.until(lambda d: d.find_element(By.ID, "train-start").is_enabled())
        driver.find_element(By.ID, "train-start").click()
        seen: set[str] = set()

        def state() -> str:
            text = driver.find_element(By.ID, "train-state").text
            seen.add(text)
            return text

        wait.until(lambda d: "train (epoch" in state())
        driver.save_screenshot(str(artifacts / "review_training_running.png"))
        assert request(url + "api/training", {})[0] == 409  # one training at a time
        wait.until(lambda d: ": done" in state() or ": failed" in state())
        work = folder / "training"
        job = json.loads(next(work.glob("job-*/state.json")).read_text(encoding="utf-8"))
        assert job["state"] == "done", (job, (work / job["id"] / "log.txt").read_text(encoding="utf-8")[-3000:])
        assert any(f"epoch {EPOCHS} of {EPOCHS}" in s or f"epoch {EPOCHS - 1} of {EPOCHS}" in s for s in seen), seen
        # the new model and the bins' on the same hold-out, on the device's engine
        comparison = job["comparison"]
        held_out = len(load_dataset(split / "holdout").samples)
        assert comparison["new"]["images"] == comparison["serving"]["images"] == held_out
        rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#compare tr")]
        assert rows[1].startswith("the bins now (int8)") and rows[2].startswith("new (int8)") and "pts" in rows[3]
        Bundle.open(job["bundle"]).verify()
        # what it trained on: the base data and the answered field samples
        field = json.loads((work / job["id"] / "field" / "field_samples.json").read_text(encoding="utf-8"))
        assert len(field) == len(items)
        # the training report, a click away; its pictures served beside it
        report = driver.find_element(By.ID, "report").get_attribute("href")
        with urllib.request.urlopen(report, timeout=10) as page:
            html = page.read().decode("utf-8")
        assert "confusion_matrix.png" in html
        with urllib.request.urlopen(report.replace("report.html", "confusion_matrix.png"), timeout=10) as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"
        assert request(url + f"runs/{job['id']}/log.txt")[0] == 404  # nothing else of the job's folder
        better = comparison["new"]["bin_accuracy"] >= comparison["serving"]["bin_accuracy"]
        verdict = driver.find_element(By.ID, "verdict").text
        assert ("smartbin fleet rollout " + job["bundle"]) in verdict if better else "keep theirs" in verdict
        Select(driver.find_element(By.ID, "f-state")).select_by_value("done")  # the answers it trained on
        driver.save_screenshot(str(artifacts / "review_training.png"))

        # roll it out from the page: the bins listed from their retained status, then a canary and the rest
        before = serving(sub)
        wait.until(lambda d: all(b in d.find_element(By.ID, "fleet").text for b in BINS))

        def roll_out(watch: str) -> None:
            # the rule is tests/fleet's: this new model may sort items elsewhere, its shadow runs but decides nothing
            for field, value in (("ro-watch", watch), ("ro-frames", "20"), ("ro-drop", "1"), ("ro-flips", "1")):
                driver.find_element(By.ID, field).clear()
                driver.find_element(By.ID, field).send_keys(value)
            driver.find_element(By.ID, "ro-shadow").clear()
            driver.find_element(By.ID, "ro-shadow").send_keys("3")
            driver.find_element(By.ID, "rollout-start").click()

        if not better:  # the hold-out gate refuses it on the server, until the user says to go past it
            roll_out("600")
            wait.until(lambda d: "hold-out gate" in d.find_element(By.ID, "status").text)
            assert "switched" not in driver.find_element(By.ID, "rollout-log").text
            driver.find_element(By.ID, "ro-force").click()

        # stopped from the page while its canary is watched: the canary is put back, nothing else moved
        roll_out("600")
        wait.until(lambda d: "bin-a switched to" in d.find_element(By.ID, "rollout-log").text)
        wait.until(lambda d: d.find_element(By.ID, "rollout-stop").is_enabled())
        driver.find_element(By.ID, "rollout-stop").click()
        wait.until(lambda d: "rollout stopped" in d.find_element(By.ID, "fleet-state").text)
        assert f"bin-a: back on {before['bin-a']}" in driver.find_element(By.ID, "rollout-log").text
        assert poll(lambda: serving(sub) == before, 30), serving(sub)
        # then the whole way: a canary, then the other
        roll_out("3")
        wait.until(lambda d: "rollout completed" in d.find_element(By.ID, "fleet-state").text)
        log = driver.find_element(By.ID, "rollout-log").text
        assert "left out: test-bin (offline)" in log  # the bin that kept the samples has stopped
        assert "stage 1/2: bin-a" in log and "stage 2/2: bin-b" in log and "stage 2 passed" in log, log
        switched = re.search(r"bin-a switched to (\S+)", log).group(1)
        assert switched.startswith(Bundle.open(job["bundle"]).manifest.name + "-") and switched not in before.values()
        assert poll(lambda: all(serving(sub).get(b) == switched for b in BINS), 30), serving(sub)
        assert script_errors(driver) == []
        driver.save_screenshot(str(artifacts / "review_rollout.png"))
    finally:
        if driver:
            driver.quit()


def test_review_refuses_training_options_it_cannot_use(tmp_path: Path, capsys):
    """Half the training options, or one smartbin train does not know: said at the start, not in a job."""
    folder = tmp_path / "samples"
    folder.mkdir()
    assert main(["review", str(folder), "--holdout", str(tmp_path)]) == 2
    assert "--train-data and --baseline" in capsys.readouterr().err
    common = ["--train-data", str(tmp_path), "--holdout", str(tmp_path), "--baseline", str(tmp_path)]
    assert main(["review", str(folder), *common, "--train-args", "--epochz 3"]) == 2
    assert "not options of smartbin train" in capsys.readouterr().err
