"""One tab sends one big batch: ``python -m bench retention --files N --file-mb M [--kind png|random]``.

Reuses the soak harness's server (``streamlit run`` on a loopback port) and memory reading. One Chromium tab
uploads N files of M MB each in one ``set_input_files`` (as a user selecting them all at once would); the run
waits until the page settles, then records the server's peak resident size (``VmHWM``), its resident size
30 and 60 s later, whether the app showed its batch-limit message, and how many files the browser itself
refused (over ``server.maxUploadSize``) or the server answered with an error. Files: ``png`` is a real
X-ray PNG padded with random bytes after its end (a valid image, as large as asked); ``random`` is random
bytes named ``.png``. Bounded: a time limit per run, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import tempfile
import time
from pathlib import Path

from bench.soak import CHROMIUM, CHROMIUM_ARGS, ROOT, UPLOAD_INPUT, chromium_missing, memory_mb, start_server, stop_server

MB = 2**20
LIMIT_TEXT = "one batch is at most"  # both of its messages say this  # the app's batch-limit message (app/streamlit_app.py)


def padded_png(size: int, seed: int) -> bytes:
    """A real X-ray PNG (a committed sample) followed by random bytes up to ``size`` (Pillow stops at IEND)."""
    from PIL import Image

    sample = sorted((ROOT / "app" / "samples").glob("*.jpeg"))[seed % 6]
    buffer = io.BytesIO()
    Image.open(sample).convert("L").save(buffer, "PNG")
    head = buffer.getvalue()
    return head + os.urandom(max(0, size - len(head)))


def write_batch(folder: Path, count: int, file_mb: float, kind: str) -> list[str]:
    paths = []
    for i in range(count):
        size = int(file_mb * MB)
        data = padded_png(size, i) if kind == "png" else os.urandom(size)
        path = folder / f"big_{kind}_{i:03d}.png"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


_BUSY = """() => !!document.querySelector('[data-stale="true"]') || !!document.querySelector('[data-testid="stStatusWidget"]')
    || !!document.querySelector('[data-testid="stFileChipIconSpinner"]')"""


async def _drive(url: str, paths: list[str], pid: int, timeout_s: float, out: dict, closed_tab_s: float = 0,
                 tabs: int = 1) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = [await browser.new_page(viewport={"width": 1280, "height": 900}) for _ in range(tabs)]
        for page in pages:
            await page.goto(url)
            await page.locator(UPLOAD_INPUT).wait_for(state="attached", timeout=90_000)
            await page.get_by_text("Upload one or more chest X-rays").first.wait_for(timeout=90_000)
        page = pages[0]
        await asyncio.sleep(3)
        out["before_hwm_mb"], out["before_rss_mb"] = memory_mb(pid)
        peak, start = out["before_hwm_mb"], time.time()
        await asyncio.gather(*(tab.locator(UPLOAD_INPUT).set_input_files(paths) for tab in pages))  # the same batch
        quiet_since = None
        while time.time() - start < timeout_s:  # settled: nothing uploading or running for 5 s in a row
            peak = max(peak, memory_mb(pid)[0])
            busy = any([await tab.evaluate(_BUSY) for tab in pages])
            quiet_since = None if busy else (quiet_since or time.time())
            if quiet_since and time.time() - quiet_since >= 5:
                break
            await asyncio.sleep(0.5)
        else:
            out["errors"].append(f"the page did not settle within {timeout_s:.0f} s")
        out["settle_s"] = round(time.time() - start, 1)
        text = await page.inner_text("body")
        out["limit_message"] = LIMIT_TEXT in text
        out["too_large_in_browser"] = text.count("or smaller")  # Streamlit's "File must be 32.0MB or smaller."
        out["file_errors_shown"] = await page.locator('[data-testid="stFileChipIconError"]').count()
        out["files_analysed_or_refused"] = text.count("File: ")
        alerts = await page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
        out["app_errors"] = [a[:200] for a in alerts[:5]]
        out["exception_shown"] = await page.locator('[data-testid="stException"]').count() > 0
        if closed_tab_s:  # the visitor closes the tab: how long until the server gives the memory back
            out["rss_at_close_mb"] = round(memory_mb(pid)[1], 1)
            await page.close()
            closed, samples = time.time(), []
            while time.time() - closed < closed_tab_s:
                samples.append((round(time.time() - closed), round(memory_mb(pid)[1], 1)))
                await asyncio.sleep(5)
            out["rss_after_close_mb"] = samples
            out["peak_rss_mb"] = round(max(peak, memory_mb(pid)[0]), 1)
            await browser.close()
            return
        for delay in (30, 60):  # the tab stays open, as a user would leave it
            while time.time() - start - out["settle_s"] < delay:
                peak = max(peak, memory_mb(pid)[0])
                await asyncio.sleep(1)
            out[f"rss_after_{delay}s_mb"] = round(memory_mb(pid)[1], 1)
        out["peak_rss_mb"] = round(max(peak, memory_mb(pid)[0]), 1)
        await browser.close()


def run_big_batch(count: int, file_mb: float, kind: str = "png", timeout_s: float = 180, closed_tab_s: float = 0,
                  session_ttl_s: int | None = None, tabs: int = 1) -> dict:
    """Fresh server, one tab, one batch; returns what was measured (the server is stopped in any case). With
    ``closed_tab_s`` the tab is closed once the page settles and the server's size is sampled for that long
    (``session_ttl_s``: the server's ``disconnectedSessionTTL``, 120 s by default)."""
    out = {"files": count, "file_mb": file_mb, "kind": kind, "batch_mb": round(count * file_mb, 1), "errors": []}
    if tabs > 1:
        out["tabs"] = tabs
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_batch(folder, count, file_mb, kind)
        extra = ("--server.disconnectedSessionTTL", str(session_ttl_s)) if session_ttl_s is not None else ()
        process, url = start_server(folder / "server.log", extra)
        try:
            asyncio.run(asyncio.wait_for(_drive(url, paths, process.pid, timeout_s, out, closed_tab_s, tabs),
                                         timeout_s + closed_tab_s + 120))
        except TimeoutError:
            out["errors"].append("time limit reached")
        finally:
            hwm, _ = memory_mb(process.pid)
            out["peak_rss_mb"] = round(max(out.get("peak_rss_mb", 0), hwm), 1)
            stop_server(process)
            log = (folder / "server.log").read_text()
            out["server_413"] = log.count("413")
            out["errors"] += [line[:200] for line in log.splitlines() if "Traceback" in line or "analysis failed" in line]
            out["outbound"] = sum(line.startswith("OUTBOUND") for line in log.splitlines())
    for key in ("before_hwm_mb", "before_rss_mb"):
        out[key] = round(out.get(key, 0), 1)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench retention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, required=True, help="files in the one batch")
    parser.add_argument("--file-mb", type=float, default=30, help="MB per file")
    parser.add_argument("--kind", choices=("png", "random"), default="png",
                        help="a real X-ray PNG padded with random bytes, or random bytes named .png")
    parser.add_argument("--label", default="", help="a note stored with the result")
    parser.add_argument("--time-limit", type=float, default=240)
    parser.add_argument("--out", help="add the result to this JSON list")
    parser.add_argument("--closed-tab", type=float, default=0, metavar="S",
                        help="close the tab once settled and sample the server's size for S seconds")
    parser.add_argument("--session-ttl", type=int, help="the server's disconnectedSessionTTL in seconds (default 120)")
    parser.add_argument("--tabs", type=int, default=1, help="tabs sending the same batch at once (default 1)")
    args = parser.parse_args(argv)
    if chromium_missing():
        return 2
    result = dict(run_big_batch(args.files, args.file_mb, args.kind, args.time_limit, args.closed_tab, args.session_ttl,
                                args.tabs), label=args.label)
    print(json.dumps(result, indent=1))
    if args.out:
        path = Path(args.out)
        runs = json.loads(path.read_text()) if path.exists() else []
        same = lambda r: (r["files"], r["file_mb"], r["kind"], r.get("label")) == (  # noqa: E731
            result["files"], result["file_mb"], result["kind"], result["label"])
        path.write_text(json.dumps([r for r in runs if not same(r)] + [result], indent=1) + "\n")
    return 0 if not result["errors"] and not result["outbound"] else 1
