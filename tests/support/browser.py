"""Debian's Chromium, headless, driven by its chromedriver: the browser the page tests use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver (installed by .ci/run)"
)


def chromium(tmp_path: Path, size: str = "1200,900"):
    """A new headless Chromium with its own empty profile under ``tmp_path``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        f"--window-size={size}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def script_errors(driver) -> list[str]:
    """The page's JavaScript errors so far (a syntax error leaves a page that looks fine and does nothing)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("source") == "javascript"]
