"""A short soak of the real server (``python -m bench soak``): two Chromium sessions, fifteen uploads each.

The long run (3 sessions × 200 uploads) is a benchmark whose figures are in the README; this one asserts
that nothing fails, no outbound call is made, the model loads once, and memory stays under the ceiling.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MEMORY_CEILING_MB = 600  # the hosted tier guarantees 690 MB for the whole app


def test_short_soak_has_no_error_and_bounded_memory():
    from bench.soak import CHROMIUM, run_soak

    if not Path(CHROMIUM).exists():
        if os.environ.get("REQUIRE_BROWSER_TEST") == "1":
            pytest.fail("chromium is not installed but REQUIRE_BROWSER_TEST=1")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    result = run_soak(sessions=2, uploads=15, report_every=5, time_limit_s=600)
    summary = result.summary()
    assert result.errors == [], result.errors[:5]
    assert result.outbound == [], result.outbound
    assert summary["results"] == 30 and summary["reports"] == 6 and summary["model_loads"] == 1
    assert summary["peak_rss_mb"] <= MEMORY_CEILING_MB, summary
