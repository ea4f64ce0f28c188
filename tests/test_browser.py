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
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("REQUIRE_BROWSER_TEST") == "1":
            pytest.fail("chromium is not installed but REQUIRE_BROWSER_TEST=1")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log_file = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--logger.level", "info"],
        cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
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
    yield url, log_path
    process.terminate()
    process.wait(timeout=20)
    log_file.close()


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


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached", timeout=180_000)
    return page


def _undecided_sample(sample_files):
    """A gallery X-ray whose probability leaves room for a threshold on either side (0.001 and 0.999)."""
    from model.predictor import Predictor
    from model.service import analyze_bytes

    predictor = Predictor.load()
    for path in sample_files:
        prediction = analyze_bytes(predictor, path.read_bytes()).prediction
        if prediction.ood.in_distribution and 0.002 < prediction.probability < 0.998:
            return path, prediction.probability
    raise AssertionError("no sample X-ray has a probability between 0.02 and 0.98")


def test_upload_read_probability_move_threshold_screenshot(server, browser, sample_files):
    path, expected = _undecided_sample(sample_files)
    page = _open(browser, server[0])
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    probability = _probability(page)
    assert probability == pytest.approx(expected, abs=0.0006)
    page.locator("strong", has_text="Does the map explain the output?").wait_for(timeout=90_000)

    slider = page.get_by_role("slider").first
    slider.focus()
    for key, expected in (("Home", "PNEUMONIA"), ("End", "NORMAL")):
        slider.press(key)  # threshold 0.001, then 0.999
        page.wait_for_function(
            "want => [...document.querySelectorAll('[data-testid=\"stAlert\"]')]"
            ".some(a => a.innerText.startsWith(want))", arg=expected, timeout=30_000)
    assert _decision(page).startswith("NORMAL")
    assert _probability(page) == pytest.approx(probability, abs=1e-3)  # the threshold never changes the probability

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / "app_upload.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 20_000
    page.close()


def test_narrow_screen_keeps_controls_reachable_and_the_gallery_short(server, browser, sample_files):
    """At 400 px the threshold and explanation controls sit in the page (no sidebar to find); screenshots."""
    page = browser.new_page(viewport={"width": 400, "height": 860})
    page.goto(server[0])
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached", timeout=180_000)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "narrow_start.png"), full_page=True)
    assert page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight") < 1600  # the gallery is compact
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(sample_files[0]))
    _probability(page)
    page.locator("strong", has_text="Does the map explain the output?").wait_for(timeout=90_000)
    assert page.locator('[data-testid="stSidebar"]').count() == 0
    for name in ("Call PNEUMONIA when the probability is at least", "Heatmap opacity"):
        control = page.get_by_role("slider", name=name)
        control.scroll_into_view_if_needed()
        assert control.is_visible()
    page.screenshot(path=str(SCREENSHOT_DIR / "narrow_result.png"), full_page=True)
    page.close()


def test_eight_concurrent_sessions_get_their_own_results(server, browser, sample_files, tmp_path):
    """Eight browser sessions upload different X-rays at once; each sees its own result; one model load."""
    import numpy as np
    from PIL import Image

    from model.ood import HEADLINE
    from model.predictor import Predictor
    from model.service import analyze_bytes

    files = list(sample_files)
    for i, source in enumerate(sample_files[2:4]):  # two more distinct images: mirrored copies
        path = tmp_path / f"variant{i}.png"
        Image.fromarray(np.ascontiguousarray(np.asarray(Image.open(source).convert("L"))[:, ::-1])).save(path)
        files.append(path)
    reference = Predictor.load()
    expected = []
    for path in files:
        prediction = analyze_bytes(reference, path.read_bytes()).prediction
        expected.append(prediction.probability if prediction.ood.in_distribution else None)

    pages = [_open(browser, server[0]) for _ in files]
    for page, path in zip(pages, files):  # all uploads go out before any result is read
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    for page, path, want in zip(pages, files, expected):
        page.get_by_text(f"File: {path.name}", exact=True).wait_for(timeout=120_000)
        if want is None:
            page.get_by_text(HEADLINE).first.wait_for(timeout=60_000)  # refused, with the gate's headline
        else:
            assert _probability(page) == pytest.approx(want, abs=0.0006)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.close()
    loads = Path(server[1]).read_text().count("model loaded:")
    assert loads == 1, f"the model was loaded {loads} times"


_WIDER_THAN_VIEWPORT = """() => {
    const width = document.documentElement.clientWidth;
    // an element that overflows inside a box that scrolls on its own (a wide table, the data grid) is fine
    // as long as that box fits the screen
    const insideAScrollBox = e => {
        const page = document.querySelector('[data-testid=stMainBlockContainer]');
        for (let a = e.parentElement; a && a !== page && page.contains(a); a = a.parentElement) {
            const style = getComputedStyle(a), box = a.getBoundingClientRect();
            if (['auto', 'scroll', 'hidden'].includes(style.overflowX) && box.right <= width + 1 && box.left >= -1) return true;
        }
        return false;
    };
    const wide = [...document.querySelectorAll('[data-testid=stMain] *')].filter(e => {
        const box = e.getBoundingClientRect();
        return box.width > 0 && (box.right > width + 1 || box.left < -1) && !insideAScrollBox(e);
    });
    return {page: document.documentElement.scrollWidth, width, wide: wide.slice(0, 5).map(e => e.getAttribute('data-testid') || e.tagName)};
}"""


def _nothing_wider_than_the_screen(page):
    found = page.evaluate(_WIDER_THAN_VIEWPORT)
    assert found["page"] <= found["width"] and not found["wide"], found


def _full_height_screenshot(page, path):
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": page.viewport_size["width"], "height": min(height + 40, 8000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000


def test_batch_table_and_model_card_fit_a_400_px_screen(server, browser, sample_files):
    """At 400 px the batch table and the model card tab are no wider than the screen; screenshots of both."""
    page = browser.new_page(viewport={"width": 400, "height": 860})
    page.goto(server[0])
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').wait_for(state="attached", timeout=180_000)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(p) for p in sample_files])
    page.locator('[data-testid="stDataFrame"]').wait_for(timeout=120_000)
    _probability(page)
    table = page.locator('[data-testid="stDataFrame"]').bounding_box()
    assert table["x"] >= 0 and table["x"] + table["width"] <= 400
    _nothing_wider_than_the_screen(page)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    _full_height_screenshot(page, SCREENSHOT_DIR / "narrow_batch.png")
    page.set_viewport_size({"width": 400, "height": 860})
    page.get_by_role("tab", name="Model card").click()
    _visitors_card_is_one_screen_and_the_plots_readable(page)
    page.close()


def _visitors_card_is_one_screen_and_the_plots_readable(page):
    """At 400 x 860 the visitor's card (four plain sections, one small table) fits one screen; the technical card
    is behind an expander, and there each plot keeps at least two thirds of its own width (its text readable), a
    wide one scrolling sideways in its own box rather than widening the page."""
    card = page.locator(".st-key-visitor_card")
    card.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    box = card.bounding_box()
    assert box["height"] <= 860 and box["x"] >= 0 and box["x"] + box["width"] <= 400, box
    text = card.inner_text()
    for heading in ("What it is for.", "How good it is.", "What it refuses.", "The heatmap."):
        assert heading in text
    assert card.locator("table").count() == 1 and "official test split" in text
    assert page.get_by_text("In short.").count() == 0 or not page.get_by_text("In short.").first.is_visible()
    _nothing_wider_than_the_screen(page)
    card.screenshot(path=str(SCREENSHOT_DIR / "narrow_visitor_card.png"))
    page.get_by_text("The full technical model card").click()
    page.get_by_text("In short.").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    plots = page.locator("[class*=st-key-plot_] img")
    assert plots.count() >= 1
    for plot in plots.all():
        natural, shown = plot.evaluate("e => [e.naturalWidth, e.getBoundingClientRect().width]")
        assert shown >= 0.66 * natural, (natural, shown)  # 10-pt text at 110 dpi stays above 10 px
    _nothing_wider_than_the_screen(page)
    _full_height_screenshot(page, SCREENSHOT_DIR / "narrow_model_card.png")
