"""Hands-free scanning on a simulated slide (live scan issue, items 1 and 6): real sample fields
tiled into a slide, seen through an eyepiece disc with vignetting and noise, along a scripted
stage path at 30 fps. The camera is simulated because no microscope is attached here; the
scanner, the motion measurement and the quality gate are the device's own."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import sample_paths
from edge.analysis.motion import motion_frame, shift_between
from edge.device.scan import ScanConfig, Scanner
from edge.evaluation.virtual_slide import Stop, eyepiece_view, mosaic, scripted_path
from edge.model.bundle import default_bundle_path, load_bundle
from edge.pipeline import Pipeline

#: A pause over A, a move, a pause over B that starts out of focus (refocusing), a pause over
#: C, and a return to A.
STOPS = [Stop(40, 20, 1.0), Stop(420, 40, 1.2, blurred=0.5), Stop(800, 220, 1.0), Stop(50, 30, 1.0)]


@pytest.fixture(scope="module")
def run():
    slide = mosaic(sample_paths())
    scanner = Scanner(ScanConfig(), Pipeline.on_cpu(load_bundle(default_bundle_path())).limits)
    rng = np.random.default_rng(0)
    frames = scripted_path(STOPS, move_seconds=1.0)
    events = [(step, scanner.feed(eyepiece_view(slide, step[1], step[2], step[3], rng), step[0])) for step in frames]
    return scanner, events


def _stop_of(t: float) -> int | None:
    """Which stop a time falls in (None while moving), from the scripted timetable."""
    start = 0.0
    for i, stop in enumerate(STOPS):
        if start <= t < start + stop.seconds - 1e-9:
            return i
        start += stop.seconds + 1.0
    return None


def test_every_pause_over_a_new_area_gives_exactly_one_field(run):
    _, events = run
    captures = [_stop_of(step[0]) for step, ev in events if ev.state == "capture"]
    assert captures == [0, 1, 2]  # A, B once sharp, C; the return to A gives none


def test_no_field_while_moving_or_out_of_focus(run):
    _, events = run
    for (t, _, _, blur), ev in events:
        if _stop_of(t) is None:
            assert ev.state in ("moving", "settling", "seen"), (t, ev.state)
        if blur > 0:
            assert ev.state != "capture", t
    assert any(ev.state == "out_of_focus" and "out of focus" in ev.reason for _, ev in events)
    back = [ev for (t, *_), ev in events if _stop_of(t) == 3 and ev.state == "seen"]
    assert back and "analysed already" in back[0].reason


def test_the_tracked_positions_follow_the_scripted_path(run):
    scanner, events = run
    side = min(s for _, _, s in scanner.fields)
    x0, y0 = STOPS[0].x, STOPS[0].y
    for (t, x, y, _), ev in events:
        error = np.hypot(ev.position[0] - (x - x0), ev.position[1] - (y - y0))
        assert error < 0.10 * side, (t, ev.position, (x - x0, y - y0))


def test_the_shift_is_measured_inside_the_disc_not_on_its_edge():
    """A whole-frame correlation would lock onto the disc, which never moves."""
    slide = mosaic(sample_paths())
    a, b = eyepiece_view(slide, 100, 50), eyepiece_view(slide, 112, 45)
    shift = shift_between(motion_frame(a), motion_frame(b))
    assert abs(shift.dx + 12) < 1.0 and abs(shift.dy - 5) < 1.0, shift
    still = shift_between(motion_frame(a), motion_frame(a))
    assert still.size < 0.1


class _SlideCamera:
    """TEST DOUBLE for the Pi camera (no microscope here): plays the simulated slide along
    ``steps`` one frame per read, then holds the last view."""

    name = "simulated slide"

    def __init__(self, steps):
        self.slide, self.steps, self.i = mosaic(sample_paths()), steps, 0
        self.rng = np.random.default_rng(1)

    def read(self):
        _, x, y, blur = self.steps[min(self.i, len(self.steps) - 1)]
        self.i += 1
        return eyepiece_view(self.slide, x, y, blur, self.rng)

    def close(self):
        pass


@pytest.mark.system  # plays a slide in real time (about 8 s)
def test_a_case_is_scanned_hands_free_until_the_case_rule_has_its_fields(tmp_path):
    import time

    from conftest import PIN, TOKEN
    from edge.device.capture import CameraWorker
    from edge.device.config import load_config
    from edge.device.service import Service
    from edge.record.store import Store
    from edge.web import create_app
    from edge.web.auth import load_credentials

    stops = [Stop(0, 0, 1.0), Stop(300, 0, 1.0), Stop(600, 0, 1.0), Stop(890, 0, 1.0), Stop(0, 268, 1.0),
             Stop(300, 268, 1.0), Stop(600, 268, 1.0), Stop(890, 268, 1.0)]
    camera = CameraWorker("sim", lambda spec: _SlideCamera(scripted_path(stops, move_seconds=0.6)), fps=30,
                          retry_max_s=1.0)
    cfg = load_config(None, environ={}, overrides={"store.state_dir": str(tmp_path), "store.min_free_mb": 0,
                                                    "server.pin": PIN, "server.token": TOKEN})
    bundle = load_bundle(default_bundle_path())
    service = Service(cfg, bundle, Pipeline.on_cpu(bundle, threads=1), Store(tmp_path, cfg.store), camera=camera)
    app = create_app(service, load_credentials(tmp_path, PIN, TOKEN), cfg.server)
    client, bearer = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    try:
        case = client.post("/api/cases", json={"code": "SCAN-1"}, headers=bearer).get_json()
        started = client.post(f"/api/cases/{case['id']}/scan", json={"action": "start"}, headers=bearer)
        camera.start()
        assert started.status_code == 200 and started.get_json()["running"]
        other = client.post("/api/cases", json={"code": "SCAN-2"}, headers=bearer).get_json()
        busy = client.post(f"/api/cases/{other['id']}/scan", json={"action": "start"}, headers=bearer)
        assert busy.status_code == 409 and "one camera" in busy.get_json()["error"]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            status = client.get(f"/api/cases/{case['id']}/scan", headers=bearer).get_json()
            if not status["running"] and status["ended"]:
                break
            time.sleep(0.2)
        assert status["ended"].startswith("enough fields: case called"), status
        record = client.get(f"/api/cases/{case['id']}", headers=bearer).get_json()
        assert record["field_count"] == status["taken"] >= 2  # every field taken is in the case, and only those
        assert len(status["fields"]) == status["taken"] and status["path"]
        assert all(f["source"] == "sim (scan)" for f in record["fields"])
        # each field keeps where the scan took it, and the report draws them as its slide map
        assert [f["stage_position"] for f in record["fields"]] == status["fields"]
        report = client.get(f"/api/cases/{case['id']}/report", headers=bearer).get_data(as_text=True)
        squares = re.findall(r'<rect class="map-field" x="([-\d.]+)" y="([-\d.]+)"', report)
        assert len(squares) == status["taken"] and len(set(squares)) == len(squares)  # one each, each in its own place
        assert 'id="slide-map"' in report and "Slide map: where the hands-free scan took each field" in report
        time.sleep(1.5)  # the slide moves on: nothing more is taken once the scan stopped
        assert client.get(f"/api/cases/{case['id']}", headers=bearer).get_json()["field_count"] == status["taken"]
        assert client.post(f"/api/cases/{case['id']}/scan", json={"action": "stop"}, headers=bearer).status_code == 200
        assert client.post(f"/api/cases/{other['id']}/scan", json={"action": "stop"}, headers=bearer).status_code == 404
    finally:
        if service.scan is not None:
            service.scan.stop()
        camera.stop()
        service.store.close()
