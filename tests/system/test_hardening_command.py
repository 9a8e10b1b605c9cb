"""``python -m tools.hardening`` (a developer tool: it is not installed on a device) runs its three scenarios on a real daemon and reports what
happened. The figures themselves (memory, counts, seconds) belong to the README, not to
assertions; what is asserted is the behaviour behind them."""

from __future__ import annotations

import json

import subprocess
import sys

from conftest import ROOT


def test_hardening_command_reports_all_three_scenarios():
    r = subprocess.run([sys.executable, "-m", "tools.hardening", "--parallel", "2", "--connections", "120", "--seconds",
                        "1", "--exports", "2000", "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    cases = {c["upload"]: set(c["statuses"]) for c in report["memory"]["cases"]}
    assert cases == {"JPEG 6000x4000 (24 Mpx, accepted)": {200}, "PNG 16384x732 (12 Mpx, accepted)": {200},
                     "PNG 16384x1464 (24 Mpx, refused: PNG limit)": {413},
                     "PNG 1x40,000,000 (refused from its header)": {413}}
    assert report["memory"]["peak_rss_mb"] > report["memory"]["idle_rss_mb"] > 0
    half_open = report["half_open"]
    assert half_open["half_open_connections"] == 120 and half_open["request_pairs_failed"] == 0
    assert half_open["request_pairs_served"] > 0
    exports = report["exports"]  # streamed: every parallel export of the whole record completes
    assert exports["results"] == 2000 and exports["statuses"] == [200] and exports["megabytes_each"] > 0
    flood = report["body_flood"]  # refused from the headers: nothing of the bodies is held
    assert flood["statuses"] == [401] and flood["peak_spooled_mb"] < 1.0
    stop = report["stop"]
    assert stop["exit_code"] == 0 and "0 request(s) unfinished" in stop["daemon_says"]
    assert set(stop["status_codes"]) <= {200, 503}
