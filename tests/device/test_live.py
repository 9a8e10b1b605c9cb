"""The live view (live scan issue, item 3): real sample fields seen through the eyepiece as
the camera's frames (a test double for the Pi camera), streamed as MJPEG parts that are
each a JPEG at the phone size, at no more than the set rate and bandwidth, with the scan's
state drawn on them, and no more streams than the device has slots for. Time is a fake clock
that the stream's own waits advance, so the pacing is checked exactly, not timed."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES
from edge.analysis.imagefile import read_rgb
from edge.device.capture import CameraWorker
from edge.evaluation.bench import eyepiece_frame
from edge.device.live import STATE_LOOK, LiveBusy, LiveConfig, LiveView, ScanLook, draw_state

PART = re.compile(rb"--blastscope-frame\r\nContent-Type: image/jpeg\r\nContent-Length: (\d+)\r\n\r\n")


class Clock:
    def __init__(self):
        self.t, self.waits = 0.0, []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.waits.append(s)
        self.t += s


class _Eyepiece:
    """TEST DOUBLE for the Pi camera (none here): the real sample fields as 1024x768 frames
    through the eyepiece, one per read."""

    name = "eyepiece"

    def __init__(self):
        self.frames = [eyepiece_frame(read_rgb(p)) for p in sorted(SAMPLES.glob("*.jpg"))]
        self.i = 0

    def read(self):
        self.i += 1
        return self.frames[self.i % len(self.frames)]

    def close(self):
        pass


@pytest.fixture
def camera():
    worker = CameraWorker("eyepiece", lambda spec: _Eyepiece(), fps=15, retry_max_s=1.0).start()
    worker.latest(wait_s=5)
    yield worker
    worker.stop()


def _jpeg(part: bytes) -> Image.Image:
    head = PART.match(part)
    assert head, part[:80]
    body = part[head.end():]
    assert len(body) == int(head.group(1)) + 2 and body.endswith(b"\r\n")
    return Image.open(io.BytesIO(body[:-2]))


def test_each_part_is_a_phone_sized_jpeg_paced_at_the_set_rate(camera):
    clock = Clock()
    live = LiveView(camera, LiveConfig(fps=12, max_side=480, stream_seconds=2.0), look=lambda: None,
                    stopping=lambda: False, clock=clock, sleep=clock.sleep)
    parts = list(live.open())
    assert 24 <= len(parts) <= 25  # 2 s at 12 frames a second (the last may start at 1.999... s)
    for part in parts[:3]:
        image = _jpeg(part)
        assert image.format == "JPEG" and max(image.size) == 480 and image.size[0] / image.size[1] == pytest.approx(4 / 3, abs=0.01)
    assert all(w == pytest.approx(1 / 12) for w in clock.waits)
    assert live.streams == 0  # the stream gave its slot back


def test_the_rate_never_exceeds_the_camera_and_the_bandwidth_stays_under_its_bound(camera):
    clock = Clock()
    live = LiveView(camera, LiveConfig(fps=30, stream_seconds=1.0), look=lambda: None, stopping=lambda: False,
                    clock=clock, sleep=clock.sleep)
    assert 15 <= len(list(live.open())) <= 16  # the camera reads 15 frames a second: the stream sends no more
    clock = Clock()
    live = LiveView(camera, LiveConfig(fps=12, max_kbps=200, stream_seconds=3.0), look=lambda: None,
                    stopping=lambda: False, clock=clock, sleep=clock.sleep)
    parts = list(live.open())
    assert 8 * sum(len(p) for p in parts[:-1]) / clock.t <= 200_000 * 1.001  # bits per second, within the bound
    assert len(parts) < 12 * 3


def test_the_scan_state_is_drawn_on_the_stream_never_on_the_camera_frame(camera):
    frame = camera.latest()
    before = frame.copy()
    drawn = draw_state(frame, ScanLook("out_of_focus", "sharpness 3.1"))
    assert np.array_equal(frame, before)  # the analysis's frame is untouched
    band = drawn[: max(18, drawn.shape[0] // 12)]
    colour = np.array(STATE_LOOK["out_of_focus"][1])
    assert (np.abs(band.reshape(-1, 3).astype(int) - colour).sum(axis=1) < 10).mean() > 0.7  # the state's colour
    assert (band.reshape(-1, 3).min(axis=1) > 200).any()  # and white words on it
    assert draw_state(frame, None) is frame
    clock = Clock()
    looks = iter([ScanLook("moving"), ScanLook("capture")] * 10)
    live = LiveView(camera, LiveConfig(stream_seconds=0.2), look=lambda: next(looks), stopping=lambda: False,
                    clock=clock, sleep=clock.sleep)
    part = next(live.open())
    top = np.asarray(_jpeg(part).convert("RGB"))[2:10, 200:400].reshape(-1, 3).mean(axis=0)
    assert np.abs(top - np.array(STATE_LOOK["capture"][1])).max() < 25


def test_no_more_streams_than_slots_and_a_closed_stream_frees_its_slot(camera):
    clock = Clock()
    live = LiveView(camera, LiveConfig(max_streams=2), look=lambda: None, stopping=lambda: False,
                    clock=clock, sleep=clock.sleep)
    a, b = live.open(), live.open()
    next(a), next(b)
    with pytest.raises(LiveBusy, match="already open on 2 phone"):
        live.open()
    a.close()  # the phone went away: waitress closes the answer's iterator
    c = live.open()
    next(c)
    assert live.streams == 2
    b.close(), c.close()
    assert live.streams == 0


def test_a_stream_ends_when_the_daemon_stops(camera):
    clock = Clock()
    stopping = {"now": False}
    live = LiveView(camera, LiveConfig(stream_seconds=600), look=lambda: None, stopping=lambda: stopping["now"],
                    clock=clock, sleep=clock.sleep)
    stream = live.open()
    next(stream), next(stream)
    stopping["now"] = True
    assert list(stream) == [] and live.streams == 0


def test_one_stream_per_user_so_one_client_cannot_hold_every_slot(camera):
    """Issue 35: one client reconnecting held both live-view slots for ever; another user got 503
    66 times in 70 s. A user's new stream ends their previous one and takes its slot."""
    import threading

    clock = Clock()
    live = LiveView(camera, LiveConfig(max_streams=2), look=lambda: None, stopping=lambda: False,
                    clock=clock, sleep=clock.sleep)
    first = live.open(owner="ana")
    next(first)
    second = live.open(owner="ana")  # a reconnect: the first stream ends at its next frame
    next(second)
    with pytest.raises(StopIteration):
        next(first)
    bob = live.open(owner="bob")  # the slot the first stream gave back
    next(bob)
    # ana reconnects again with every slot taken: her old stream (served by a request thread
    # here as on the server) ends and hands its slot over; bob keeps his
    threading.Timer(0.1, lambda: next(second, None)).start()
    third = live.open(owner="ana")
    next(third)
    assert live.streams == 2 and next(bob)
    with pytest.raises(LiveBusy):
        live.open(owner="carl")
    bob.close(), third.close()
    assert live.streams == 0
