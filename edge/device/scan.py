"""Hands-free scanning: decide, frame by frame, when the camera shows a field worth analysing.

A technician moves the stage with one hand and the focus with the other; a tap on a phone for
every field is one hand too many. The scanner watches every camera frame and says "capture"
once per stop when (a) the stage has stopped: the frame-to-frame shift (``edge.analysis.motion``)
stays under ``still_px`` for ``settle_seconds``; (b) the view passes the quality gate's own
measures (the same crop, size and limits as an analysed field, so a capture is never refused
for focus afterwards); and (c) the area is new: the stage position is the running sum of the
shifts, and a view overlapping an already analysed field by more than ``max_overlap`` of its
area is "seen", not captured. Refocusing changes sharpness, not position: a blurred view is
"out of focus" and waits; once sharp at the same stop it is captured.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Callable

import numpy as np
from pydantic import Field

from edge.analysis.fieldofview import crop_to_field
from edge.analysis.motion import MotionFrame, Shift, motion_frame, shift_between
from edge.analysis.preprocess import fit_to_input
from edge.analysis.quality import GateLimits, measure_quality
from edge.analysis.result import Result
from edge.device.capture import CameraError, CameraWorker
from edge.settings import Float, Settings

#: The map's path: one point every PATH_EVERY frames, the last PATH_POINTS of them (at 30
#: frames a second, the last 100 s of stage movement).
PATH_EVERY, PATH_POINTS = 5, 600

#: What the scanner says about a frame (the live view draws it; the page shows it).
STATES = ("moving", "settling", "capture", "seen", "out_of_focus", "poor_view")


class ScanConfig(Settings):
    #: Shift per frame (full-frame pixels) under which the stage counts as still.
    still_px: Annotated[Float, Field(gt=0)] = 1.5
    #: How long the stage must stay still before a field is taken.
    settle_seconds: Annotated[Float, Field(ge=0)] = 0.3
    #: Largest share of a new view's area that may overlap an analysed field.
    max_overlap: Annotated[Float, Field(ge=0, le=1)] = 0.5
    #: While a still view fails the gate (someone is focusing), look again only this often:
    #: the gate costs several times the motion check, and the camera delivers 30 frames a second.
    recheck_seconds: Annotated[Float, Field(ge=0)] = 0.1


@dataclass(frozen=True)
class ScanEvent:
    state: str  # one of STATES
    position: tuple[float, float]  # where the view is on the slide, in frame pixels from the first frame
    shift: Shift | None
    reason: str | None = None  # why a still view is not taken (focus, exposure, seen)


@dataclass
class Scanner:
    config: ScanConfig
    limits: GateLimits
    field_side: int = 224
    #: Analysed fields: (x, y, side of the field's square in frame pixels).
    fields: list[tuple[float, float, float]] = field(default_factory=list)
    #: The tracked path for the map: (time, x, y) of every PATH_EVERY-th frame, the last
    #: PATH_POINTS of them (a long scan must not grow without bound, nor cost each poll a copy).
    path: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=PATH_POINTS))
    _frames: int = 0
    _previous: MotionFrame | None = None
    _x: float = 0.0
    _y: float = 0.0
    _still_since: float | None = None
    _decided: str | None = None  # what this stop came to (capture, then seen): once per stop
    _refused: ScanEvent | None = None  # the gate's last verdict on this stop, and when to look again
    _recheck_at: float = 0.0

    def overlap(self, x: float, y: float, side: float) -> float:
        """The largest share of a ``side`` square at (x, y) covered by one analysed field."""
        best = 0.0
        for fx, fy, fside in self.fields:
            s = min(side, fside)
            w = max(0.0, s - abs(fx - x))
            h = max(0.0, s - abs(fy - y))
            best = max(best, w * h / (side * side))
        return best

    def feed(self, frame: np.ndarray, t: float) -> ScanEvent:
        """Look at one RGB frame taken at ``t`` (seconds, monotonic)."""
        current = motion_frame(frame)
        shift = shift_between(self._previous, current) if self._previous is not None else None
        self._previous = current
        if shift is not None:
            # the picture moves one way when the view over the slide moves the other
            self._x, self._y = self._x - shift.dx, self._y - shift.dy
        position = (self._x, self._y)
        if self._frames % PATH_EVERY == 0:
            self.path.append((t, self._x, self._y))
        self._frames += 1
        if shift is not None and shift.size > self.config.still_px:
            self._still_since, self._decided, self._refused = None, None, None
            return ScanEvent("moving", position, shift)
        if self._still_since is None:
            self._still_since = t
        if t - self._still_since < self.config.settle_seconds:
            return ScanEvent("settling", position, shift)
        if self._decided is not None:
            return ScanEvent("seen", position, shift, "analysed at this stop already")
        if self._refused is not None and t < self._recheck_at:
            return ScanEvent(self._refused.state, position, shift, self._refused.reason)
        cropped, _ = crop_to_field(frame)
        quality = measure_quality(np.ascontiguousarray(fit_to_input(cropped, self.field_side)), self.limits)
        if quality.reasons:
            state = "out_of_focus" if quality.reasons[0].startswith("out of focus") else "poor_view"
            self._refused, self._recheck_at = ScanEvent(state, position, shift, quality.reasons[0]), t + self.config.recheck_seconds
            return self._refused
        self._refused = None
        side = float(min(cropped.shape[:2]))
        covered = self.overlap(self._x, self._y, side)
        if covered > self.config.max_overlap:
            self._decided = "seen"
            return ScanEvent("seen", position, shift, f"{covered:.0%} of this view was analysed already")
        self._decided = "capture"
        self.fields.append((self._x, self._y, side))
        return ScanEvent("capture", position, shift)


class ScanSession:
    """One case scanned hands-free: a thread that feeds every new camera frame to a ``Scanner``
    and analyses each field it takes into the case, until ``done`` names a reason to stop (the
    case rule has its fields) or someone stops it. The camera is the device's only one, so the
    service allows one session at a time."""

    def __init__(self, case_id: int, client: str, scanner: Scanner, camera: CameraWorker,
                 analyze: Callable[[np.ndarray, tuple[float, float, float]], Result], done: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.case_id, self.client, self.scanner, self.camera = case_id, client, scanner, camera
        self._analyze, self._done, self._clock = analyze, done, clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.last: ScanEvent | None = None
        self.taken = 0
        self.ended: str | None = None  # why the scan stopped, once it has
        self._thread = threading.Thread(target=self._run, name=f"scan-case-{case_id}", daemon=True)

    def start(self) -> ScanSession:
        self._thread.start()
        return self

    def stop(self, why: str = "stopped on the phone") -> None:
        with self._lock:
            if self.ended is None:
                self.ended = why
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    @property
    def running(self) -> bool:
        return self.ended is None and self._thread.is_alive()

    def _run(self) -> None:
        seen_frames = -1
        while not self._stop.is_set():
            if self.camera.state.frames == seen_frames:
                self._stop.wait(0.01)
                continue
            seen_frames = self.camera.state.frames
            try:
                frame = self.camera.latest(wait_s=1.0)
            except CameraError as exc:
                self.last = ScanEvent("poor_view", self.last.position if self.last else (0.0, 0.0), None, f"camera: {exc}")
                self._stop.wait(0.5)
                continue
            event = self.scanner.feed(frame, self._clock())
            self.last = event
            if event.state != "capture":
                continue
            try:
                self._analyze(frame, self.scanner.fields[-1])
            except Exception as exc:  # noqa: BLE001 - a full record or a failing model ends the scan, saying why
                self.stop(f"stopped: {exc}")
                return
            self.taken += 1
            if (why := self._done()) is not None:
                self.stop(why)
                return

    def status(self) -> dict[str, object]:
        event = self.last
        return {
            "case_id": self.case_id, "running": self.running, "by": self.client, "taken": self.taken,
            "state": event.state if event else "starting", "reason": event.reason if event else None,
            "position": [round(v, 1) for v in event.position] if event else [0.0, 0.0],
            "fields": [[round(x, 1), round(y, 1), round(s, 1)] for x, y, s in self.scanner.fields],
            "path": [[round(x, 1), round(y, 1)] for _, x, y in self.scanner.path],
            "ended": self.ended,
        }
