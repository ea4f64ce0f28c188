"""Load and soak test of the real app: ``python -m bench soak [--sessions N] [--uploads M] [--data DIR]``.

Starts ``streamlit run`` on a free port on 127.0.0.1 (and kills only that
process), then drives N Chromium sessions at once with Playwright; each uploads
M distinct X-rays one after another (the previous file is removed first, as a
user replacing a file would), waits for the result, and downloads a PDF report
every ``--report-every`` uploads. It prints the server's peak resident memory
(``VmHWM`` from /proc, the server process itself), its resident memory at the
end, errors, and p50/p95 seconds from upload to result. Bounded: a fixed
number of uploads, a time limit, loopback only.

The server runs under an audit hook that records any attempt to resolve or
connect to a host other than the loopback: a local run must make no outbound
call (Streamlit's welcome banner would look up the machine's external IP).

Images: ``--data DIR`` takes the X-rays under DIR (e.g. the official test
split); without it, distinct X-rays are generated from the committed samples
(cropped, rescaled and re-encoded), so CI needs no dataset.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GATE_HEADLINE = "Outside what this model knows"  # model.ood.HEADLINE: what the page says when the gate flags an image
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzoneInput"]'
LOOPBACK = ("127.", "localhost", "::1", "0.0.0.0", "")

# The server process: an audit hook prints OUTBOUND for any non-loopback lookup or connection, then Streamlit runs.
_SERVER = """
import sys

def _audit(event, args):
    if event in ("socket.getaddrinfo", "socket.connect"):
        host = args[0] if event == "socket.getaddrinfo" else args[1]
        host = str(host[0] if isinstance(host, tuple) else host)
        if not host.startswith({loopback!r}) and not host.startswith("/"):
            print("OUTBOUND", event, host, file=sys.stderr, flush=True)

sys.addaudithook(_audit)
from streamlit.web.cli import main
sys.argv = ["streamlit", "run", "app/streamlit_app.py", "--server.port", "{port}", "--server.address", "127.0.0.1",
            "--server.headless", "true", "--logger.level", "info", *{extra!r}]
main()
"""


@dataclass
class SoakResult:
    sessions: int
    uploads_per_session: int
    results: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    reports: int = 0
    peak_rss_mb: float = 0.0
    end_rss_mb: float = 0.0
    outbound: list[str] = field(default_factory=list)
    model_loads: int = 0
    upload_retries: int = 0  # uploads the browser had to send twice (lost in a rerun), not errors of the app
    busy_seen: int = 0  # uploads whose page showed the app's "Busy: ... Yours is in line" while waiting
    wall_s: float = 0.0

    def summary(self) -> dict:
        lat = sorted(self.latencies_s)
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))] if lat else None
        return {"sessions": self.sessions, "uploads_per_session": self.uploads_per_session, "results": self.results,
                "errors": len(self.errors), "reports": self.reports, "peak_rss_mb": round(self.peak_rss_mb, 1),
                "end_rss_mb": round(self.end_rss_mb, 1), "p50_s": round(statistics.median(lat), 2) if lat else None,
                "p95_s": round(p95, 2) if p95 is not None else None, "outbound_calls": len(self.outbound),
                "model_loads": self.model_loads, "upload_retries": self.upload_retries, "busy_seen": self.busy_seen,
                "wall_s": round(self.wall_s, 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(log_path: Path, extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """A real Streamlit server on a free loopback port (``extra``: more ``streamlit run`` options); returns
    (process, url) once healthy."""
    port = free_port()
    log = open(log_path, "w")
    code = _SERVER.format(port=port, loopback=LOOPBACK, extra=list(extra))
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the Streamlit server did not come up within 90 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of a process in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            key, value = line.split(":")
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmHWM"], fields["VmRSS"]


def generated_xrays(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Distinct X-rays made from the committed samples: random crop, aspect, size and JPEG quality."""
    from PIL import Image

    sources = [Image.open(p).convert("L") for p in sorted((ROOT / "app" / "samples").glob("*.jpeg"))]
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        image = sources[i % len(sources)]
        w, h = image.size
        left, top = rng.integers(0, w // 10), rng.integers(0, h // 10)
        crop = image.crop((left, top, w - rng.integers(0, w // 10), h - rng.integers(0, h // 10)))
        size = int(rng.integers(300, 900))
        crop = crop.resize((size, int(size * rng.uniform(0.8, 1.2))))
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=int(rng.integers(80, 96)))
        files.append((f"generated_{i:04d}.jpeg", buffer.getvalue()))
    return files


def dataset_xrays(folder: Path, count: int) -> list[tuple[str, bytes]]:
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if len(paths) < count:
        raise ValueError(f"{folder} has {len(paths)} images; {count} are needed")
    picked = [paths[i] for i in np.random.default_rng(0).choice(len(paths), count, replace=False)]
    return [(p.name, p.read_bytes()) for p in picked]


_IDLE = """() => !document.querySelector('[data-stale="true"]') && !document.querySelector('[data-testid="stStatusWidget"]')
    && document.body.innerText.includes('Upload one or more chest X-rays')"""
_SETTLED = """() => {
  if (document.querySelector('[data-stale="true"]') || document.querySelector('[data-testid="stStatusWidget"]')) return false;
  const text = document.body.innerText;
  return text.includes('Pneumonia probability') || text.includes(GATE_HEADLINE)
      || !!document.querySelector('[data-testid="stAlertContentError"]');
}""".replace("GATE_HEADLINE", json.dumps(GATE_HEADLINE))


async def _watch_for_busy(page) -> bool:
    """True once the page shows the app's queue message (the server's analysis queue made this visitor wait)."""
    while not await page.get_by_text("Busy: the server is analysing").count():
        await asyncio.sleep(0.2)
    return True


async def _wait_for_result(page, name: str, timeout_ms: int) -> str:
    """'result', 'withheld' or 'refused' once the page shows the settled outcome for ``name``."""
    await page.get_by_text(f"File: {name}", exact=True).wait_for(timeout=timeout_ms)
    await page.wait_for_function(_SETTLED, timeout=timeout_ms, polling=100)
    probability = page.locator('[data-testid="stMetric"]', has_text="Pneumonia probability")
    try:  # a settled page can still be between two script runs: give the result a moment to be drawn
        await probability.first.wait_for(timeout=5_000)
        return "result"
    except Exception:
        return "withheld" if await page.get_by_text(GATE_HEADLINE).count() else "refused"


async def _session(browser, url, files, report_every, result: SoakResult, folder: Path, timeout_ms: int):
    page = await browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    try:
        await page.goto(url)
        await page.locator(UPLOAD_INPUT).wait_for(state="attached", timeout=timeout_ms)
        for i, (name, data) in enumerate(files):
            delete = page.locator('[data-testid="stFileChipDeleteBtn"] button')
            while await delete.count():
                await delete.first.click()
                await page.wait_for_timeout(150)
            await page.locator('[data-testid="stFileChip"]').first.wait_for(state="detached", timeout=timeout_ms)
            await page.wait_for_function(_IDLE, timeout=timeout_ms, polling=100)  # the removal's rerun has ended
            path = folder / name
            path.write_bytes(data)
            busy = asyncio.create_task(_watch_for_busy(page))
            start = time.perf_counter()
            await page.locator(UPLOAD_INPUT).set_input_files(str(path))
            try:
                await page.get_by_text(f"File: {name}", exact=True).wait_for(timeout=min(timeout_ms, 30_000))
            except Exception:  # the browser's upload was lost in a rerun: send it again, and count it
                result.upload_retries += 1
                await page.locator(UPLOAD_INPUT).set_input_files(str(path))
            outcome = await _wait_for_result(page, name, timeout_ms)
            busy.cancel()
            result.busy_seen += busy.done() and not busy.cancelled() and busy.result()
            result.latencies_s.append(time.perf_counter() - start)
            result.results += 1
            if await page.locator('[data-testid="stException"]').count():
                result.errors.append(f"{name}: exception shown")
            if outcome == "refused":
                alerts = await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
                result.errors.append(f"{name}: refused: {' | '.join(alerts)[:300]}")
            if report_every and outcome == "result" and (i + 1) % report_every == 0:
                await page.get_by_role("button", name="Prepare report (PDF)").click()  # rendered only when asked
                async with page.expect_download(timeout=timeout_ms) as download:
                    await page.get_by_role("button", name="Download report (PDF)").click()
                saved = folder / f"report_{i}.pdf"
                await (await download.value).save_as(saved)
                result.reports += 1 if saved.read_bytes().startswith(b"%PDF") else 0
    except Exception as exc:  # a timeout or a broken page is an error of the soak, not a crash of it
        text = (await page.inner_text("body"))[:600].replace("\n", " | ")
        result.errors.append(f"{type(exc).__name__}: {str(exc)[:200]} PAGE: {text}")
    finally:
        await page.close()


async def _drive(url, per_session, report_every, result, folder, pid, timeout_ms):
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sampling = True

        async def sample_memory():
            while sampling:
                result.peak_rss_mb = max(result.peak_rss_mb, memory_mb(pid)[0])
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample_memory())
        await asyncio.gather(*(_session(browser, url, files, report_every, result, folder, timeout_ms)
                               for files in per_session))
        sampling = False
        await sampler
        await browser.close()


def run_soak(sessions: int = 2, uploads: int = 15, report_every: int = 5, data: str | None = None,
             time_limit_s: float = 1800, timeout_s: float = 120) -> SoakResult:
    """Drive a fresh server; returns what was measured (the server is stopped in any case)."""
    files = dataset_xrays(Path(data), sessions * uploads) if data else generated_xrays(sessions * uploads)
    per_session = [files[s * uploads:(s + 1) * uploads] for s in range(sessions)]
    result = SoakResult(sessions, uploads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        process, url = start_server(folder / "server.log")
        start = time.time()
        try:
            asyncio.run(asyncio.wait_for(_drive(url, per_session, report_every, result, folder, process.pid,
                                                int(timeout_s * 1000)), time_limit_s))
        except TimeoutError:
            result.errors.append(f"time limit of {time_limit_s:.0f} s reached")
        finally:
            result.wall_s = time.time() - start
            hwm, rss = memory_mb(process.pid)
            result.peak_rss_mb, result.end_rss_mb = max(result.peak_rss_mb, hwm), rss
            stop_server(process)
            log = (folder / "server.log").read_text()
            result.outbound = [line for line in log.splitlines() if line.startswith("OUTBOUND")]
            result.model_loads = log.count("model loaded:")
            result.errors += [line for line in log.splitlines() if "analysis failed" in line or "Traceback" in line]
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _slider_burst(url: str, pid: int, presses: int, interval_s: float, out: dict, folder: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        await page.goto(url)
        await page.locator(UPLOAD_INPUT).wait_for(state="attached", timeout=120_000)
        sample = sorted((ROOT / "app" / "samples").glob("*.jpeg"))[-1]
        await page.locator(UPLOAD_INPUT).set_input_files(str(sample))
        await page.wait_for_function(_SETTLED, timeout=120_000, polling=200)
        thumb = page.get_by_role("slider").first  # the threshold slider comes first
        await thumb.focus()
        cpu_before, start = cpu_seconds(pid), time.perf_counter()
        for _ in range(presses):  # arrow keys, as a visitor holding one down
            await page.keyboard.press("ArrowRight")
            await asyncio.sleep(interval_s)
        last_key = time.perf_counter()
        await page.wait_for_function(_SETTLED, timeout=300_000, polling=100)
        settled = time.perf_counter()
        out.update(presses=presses, burst_s=round(last_key - start, 1), settled_after_last_key_s=round(settled - last_key, 2),
                   server_cpu_s=round(cpu_seconds(pid) - cpu_before, 1))
        click = time.perf_counter()
        prepare = page.get_by_role("button", name="Prepare report (PDF)")
        if await prepare.count():  # the app renders a report only when asked (an older app rendered it every run)
            await prepare.click()
        async with page.expect_download(timeout=120_000) as download:
            await page.get_by_role("button", name="Download report (PDF)").click()
        saved = folder / "report.pdf"
        await (await download.value).save_as(saved)
        out.update(pdf_after_burst_s=round(time.perf_counter() - click, 2), pdf_ok=saved.read_bytes().startswith(b"%PDF"))
        await browser.close()


def run_slider_burst(presses: int = 150, interval_s: float = 0.128) -> dict:
    """One tab: a result, then ``presses`` arrow-key changes of the threshold slider (the issue's 469 in 60 s is one
    every 128 ms); how long the page takes to settle after the last key, the server's CPU time over the burst, and
    how long a PDF report then takes."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        process, url = start_server(folder / "server.log")
        try:
            asyncio.run(asyncio.wait_for(_slider_burst(url, process.pid, presses, interval_s, out, folder), 600))
        finally:
            out["peak_rss_mb"] = round(memory_mb(process.pid)[0], 1)
            stop_server(process)
    return out


def chromium_missing() -> bool:
    """True (and says so) when Debian's chromium, which every browser benchmark drives, is not installed."""
    if Path(CHROMIUM).exists():
        return False
    print("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)", file=sys.stderr)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--uploads", type=int, default=200, help="uploads per session")
    parser.add_argument("--report-every", type=int, default=10, help="download a PDF report every N uploads (0: never)")
    parser.add_argument("--data", help="folder of X-rays to upload (default: generated from the samples)")
    parser.add_argument("--time-limit", type=float, default=3600)
    parser.add_argument("--out", help="also write the summary as JSON here")
    parser.add_argument("--slider-burst", type=int, metavar="N", help="instead: N arrow-key changes of the threshold "
                                                                       "slider in one tab, then a PDF report")
    args = parser.parse_args(argv)
    if chromium_missing():
        return 2
    if args.slider_burst:
        summary = run_slider_burst(args.slider_burst)
        print(json.dumps(summary, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
        return 0
    result = run_soak(args.sessions, args.uploads, args.report_every, args.data, args.time_limit)
    summary = result.summary()
    print(json.dumps(summary, indent=1))
    for line in result.errors[:10] + result.outbound[:5]:
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(dict(summary, errors_list=result.errors[:50]), indent=1) + "\n")
    return 0 if not result.errors and not result.outbound else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())

