"""How far the slide moved between two camera frames: phase correlation on small grey frames.

Hands-free scanning (``edge.device.scan``) needs to know when the stage has stopped and where
it is. The eyepiece's disc and its vignetting do not move with the slide and would pull a
whole-frame correlation towards zero shift, so only a central square well inside the disc is
compared, reduced to ``MOTION_SIDE`` pixels (fine enough for a shift and far cheaper than the
frame), with a Hann window against the square's own edges. OpenCV's ``phaseCorrelate`` does
the work; its response (the normalised peak) says how much the estimate can be trusted: a
blurred or empty view gives a low one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Side of the reduced central square the shift is measured on.
MOTION_SIDE = 192
#: Share of the frame's shorter side the central square spans (inside any eyepiece disc that
#: fills at least 71% of the shorter side, as the field-of-view crop requires).
CENTRE_SHARE = 0.5

_WINDOWS: dict[int, np.ndarray] = {}


@dataclass(frozen=True)
class MotionFrame:
    """A frame reduced for motion measurement; ``scale`` converts its pixels to the frame's."""

    grey: np.ndarray
    scale: float


@dataclass(frozen=True)
class Shift:
    dx: float  # how far the picture moved between the frames, in full-frame pixels (right +)
    dy: float  # (down +)
    response: float  # phase correlation's peak, 0 to 1: low means the estimate is not trusted

    @property
    def size(self) -> float:
        return float(np.hypot(self.dx, self.dy))


def motion_frame(rgb: np.ndarray) -> MotionFrame:
    """The central square of ``rgb``, grey, reduced to ``MOTION_SIDE`` (float32)."""
    h, w = rgb.shape[:2]
    side = max(8, int(min(h, w) * CENTRE_SHARE))
    y, x = (h - side) // 2, (w - side) // 2
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[y:y + side, x:x + side]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (MOTION_SIDE, MOTION_SIDE), interpolation=cv2.INTER_AREA)
    return MotionFrame(small.astype(np.float32), side / MOTION_SIDE)


def shift_between(before: MotionFrame, after: MotionFrame) -> Shift:
    """How far the picture moved from ``before`` to ``after``."""
    window = _WINDOWS.get(MOTION_SIDE)
    if window is None:
        window = _WINDOWS.setdefault(MOTION_SIDE, cv2.createHanningWindow((MOTION_SIDE, MOTION_SIDE), cv2.CV_32F))
    (dx, dy), response = cv2.phaseCorrelate(before.grey, after.grey, window)
    return Shift(float(dx) * after.scale, float(dy) * after.scale, float(response))
