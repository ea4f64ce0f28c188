"""End to end in a real browser: the Streamlit server on localhost, driven by Playwright + Chromium.

Needs Debian's chromium at /usr/bin/chromium (CI installs it). Without it the
test is skipped, unless REQUIRE_BROWSER_TEST=1 (as in CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOT_DIR = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "runs" / "screenshots"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not Path(CHROMIUM).exists():
        if os.environ.get("REQUIRE_BROWSER_TEST") == "1":
            pytest.fail("chromium is not installed but REQUIRE_BROWSER_TEST=1")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail("the Streamlit server did not come up within 90 s")
    yield url
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _probability(page) -> float:
    metric = page.locator('[data-testid="stMetric"]', has_text="Pneumonia probability")
    metric.wait_for(timeout=90_000)
    return float(metric.locator('[data-testid="stMetricValue"]').inner_text().strip().rstrip("%")) / 100


def _decision(page) -> str:
    alert = page.locator('[data-testid="stAlert"]', has_text="at threshold")
    alert.wait_for(timeout=30_000)
    return alert.inner_text()


def test_upload_read_probability_move_threshold_screenshot(server, browser, sample_files):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(sample_files[-1]))
    probability = _probability(page)
    assert 0.0 <= probability <= 1.0
    page.get_by_text("Faithfulness check").wait_for(timeout=90_000)

    slider = page.get_by_role("slider").first
    slider.focus()
    for key, expected in (("Home", "PNEUMONIA"), ("End", "NORMAL")):
        slider.press(key)  # threshold 0.01, then 0.99
        page.wait_for_function(
            "want => [...document.querySelectorAll('[data-testid=\"stAlert\"]')]"
            ".some(a => a.innerText.startsWith(want))", arg=expected, timeout=30_000)
    if 0.01 < probability < 0.99:
        assert _decision(page).startswith("NORMAL")
    assert _probability(page) == pytest.approx(probability, abs=1e-3)  # the threshold never changes the probability

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / "app_upload.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 20_000
    page.close()
