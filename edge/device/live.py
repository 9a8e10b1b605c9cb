"""The live view to focus by: the camera's frames as an MJPEG stream
(``multipart/x-mixed-replace``), which every phone browser shows in a plain ``<img>`` with no
script, at a phone-sized resolution, with the hands-free scan's state drawn on it.

Why these bounds: waitress serves each request on one of a few threads (``server.threads``),
and a stream holds its thread for as long as it runs. So at most ``max_streams`` streams run
at once (the others get a 503 and the page falls back to a still every second), each ends
after ``stream_seconds`` (the page reconnects; a forgotten tab cannot hold a thread for
ever) and when the daemon stops. The bytes per second are bounded by ``max_kbps``: after a
frame of ``n`` bytes the stream waits at least ``n / max_kbps`` before the next. Each camera
frame is encoded once, however many phones watch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated, Callable, Iterator

import cv2
import numpy as np
from pydantic import Field

from edge.device.capture import CameraError, CameraWorker
from edge.settings import Float, Int, Settings

BOUNDARY = "blastscope-frame"

#: What the scan says, in the words and colours (RGB) drawn on the live view.
STATE_LOOK: dict[str, tuple[str, tuple[int, int, int]]] = {
    "moving": ("STAGE MOVING", (90, 90, 90)),
    "settling": ("SETTLING", (30, 90, 170)),
    "capture": ("FIELD TAKEN", (20, 120, 40)),
    "seen": ("AREA SEEN ALREADY: MOVE ON", (130, 70, 0)),
    "out_of_focus": ("OUT OF FOCUS: TURN THE FINE FOCUS", (170, 20, 20)),
    "poor_view": ("VIEW NOT USABLE", (170, 20, 20)),
}


class LiveConfig(Settings):
    fps: Annotated[Float, Field(gt=0, le=30)] = 12.0  # at most; never above the camera's own rate
    max_side: Annotated[Int, Field(ge=160, le=1280)] = 480  # pixels, the longer side
    jpeg_quality: Annotated[Int, Field(ge=30, le=95)] = 70
    max_kbps: Annotated[Float, Field(gt=0)] = 4000.0  # kilobits per second per stream, at most
    max_streams: Annotated[Int, Field(ge=0)] = 2  # streams at once (each holds a server thread)
    stream_seconds: Annotated[Float, Field(gt=0, le=3600)] = 60.0


class LiveBusy(RuntimeError):
    """Every live-view slot is taken; the message says what to do."""


@dataclass(frozen=True)
class ScanLook:
    """What the scan of the phone's case shows now: its state and the reason, if any."""

    state: str
    reason: str | None = None


def draw_state(frame: np.ndarray, look: ScanLook | None) -> np.ndarray:
    """The frame with a band across its top naming the scan's state (a copy; the camera's
    frame is shared with the analysis and is never drawn on)."""
    if look is None or look.state not in STATE_LOOK:
        return frame
    words, colour = STATE_LOOK[look.state]
    out = frame.copy()
    band = max(18, out.shape[0] // 12)
    out[:band] = colour
    scale = band / 40
    cv2.putText(out, words, (8, int(band * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(2 * scale)), cv2.LINE_AA)
    return out


def encode(frame: np.ndarray, max_side: int, quality: int) -> bytes:
    scale = max_side / max(frame.shape[:2])
    if scale < 1:
        frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CameraError("the frame could not be encoded as JPEG")
    return data.tobytes()


class LiveView:
    """Streams of the camera for the page; one encoding per camera frame and scan state."""

    def __init__(self, camera: CameraWorker, config: LiveConfig, look: Callable[[], ScanLook | None],
                 stopping: Callable[[], bool], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.camera, self.config, self._look, self._stopping = camera, config, look, stopping
        self._clock, self._sleep = clock, sleep
        self._slots = threading.BoundedSemaphore(config.max_streams) if config.max_streams else None
        self._lock = threading.Lock()
        self._cached: tuple[int, ScanLook | None, bytes] | None = None
        self.streams = 0  # running now, for the status page
        self._owners: dict[str, threading.Event] = {}  # each user's stream, to end it when they open another

    def jpeg(self) -> bytes:
        """The newest frame as the stream shows it, encoded once for every watcher."""
        look = self._look()
        with self._lock:
            frames = self.camera.state.frames
            if self._cached is not None and self._cached[0] == frames and self._cached[1] == look:
                return self._cached[2]
        data = encode(draw_state(self.camera.latest(wait_s=1.0), look), self.config.max_side, self.config.jpeg_quality)
        with self._lock:
            self._cached = (frames, look, data)
        return data

    def open(self, owner: str = "") -> Iterator[bytes]:
        """A stream's parts. Takes a slot now (``LiveBusy`` when none is free), so the caller
        can answer 503 before any byte is sent; the slot is given back when the stream ends.

        One stream per ``owner`` (a user): a user's new stream ends their previous one and
        takes its slot, so one client reconnecting cannot hold every slot (issue 35: another
        user got 503 66 times in 70 s)."""
        ended = threading.Event()
        with self._lock:
            previous = self._owners.get(owner) if owner else None
            if previous is not None:
                previous.set()  # that stream stops at its next frame and gives its slot back
        wait = 3.0 / max(self.config.fps, 0.5) if previous is not None else 0.0
        got = self._slots is not None and (self._slots.acquire(timeout=wait) if wait else
                                            self._slots.acquire(blocking=False))
        if not got:
            raise LiveBusy(f"the live view is already open on {self.config.max_streams} phone(s), the most this device "
                           "serves at once: close it on one of them; a still picture is shown instead")
        try:
            self.jpeg()  # a camera that delivers nothing fails here, before the answer starts
        except BaseException:
            assert self._slots is not None
            self._slots.release()
            raise
        with self._lock:
            self.streams += 1
            if owner:
                self._owners[owner] = ended
        return self._parts(ended, owner)

    def _parts(self, ended: threading.Event | None = None, owner: str = "") -> Iterator[bytes]:
        period = 1.0 / min(self.config.fps, 1.0 / self.camera.period)
        bytes_per_s = self.config.max_kbps * 1000 / 8
        end = self._clock() + self.config.stream_seconds
        try:
            while not self._stopping() and self._clock() < end and not (ended is not None and ended.is_set()):
                started = self._clock()
                try:
                    data = self.jpeg()
                except CameraError:
                    return  # the page falls back to stills and says why
                yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                       + data + b"\r\n")
                wait = max(period, len(data) / bytes_per_s) - (self._clock() - started)
                if wait > 0:
                    self._sleep(wait)
        finally:
            with self._lock:
                self.streams -= 1
                if owner and self._owners.get(owner) is ended:
                    del self._owners[owner]
            assert self._slots is not None
            self._slots.release()
