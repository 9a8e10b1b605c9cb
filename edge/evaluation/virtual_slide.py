"""A simulated slide under the eyepiece, to test and measure hands-free scanning without a
microscope: real fields tiled into a mosaic, seen through a bright disc with vignetting and
sensor noise, along a scripted stage path (moves, pauses, a refocus, a return to an area seen
before) at the camera's frame rate."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from edge.analysis.imagefile import read_rgb

FRAME_SIZE = (640, 480)  # width, height: the camera's preview stream
VIEW = 360  # slide pixels across the square that the frame shows
DISC_RADIUS = 0.47  # of the frame's height


def mosaic(paths: list[Path], columns: int = 4, scale: float = 1.4) -> np.ndarray:
    """Fields side by side, enlarged by ``scale`` to the eyepiece's magnification."""
    tiles = [cv2.resize(read_rgb(p), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) for p in paths]
    side = tiles[0].shape[0]
    rows = -(-len(tiles) // columns)
    slide = np.full((rows * side, columns * side, 3), 235, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        slide[r * side:(r + 1) * side, c * side:(c + 1) * side] = tile[:side, :side]
    return slide


def eyepiece_view(slide: np.ndarray, x: float, y: float, blur: float = 0.0, rng: np.random.Generator | None = None,
                  size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """The camera frame with the view's top-left corner at slide position (x, y) (sub-pixel)."""
    w, h = size
    m = np.array([[1, 0, -x], [0, 1, -y]], np.float32)
    view = cv2.warpAffine(slide, m, (VIEW, VIEW), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if blur > 0:
        view = cv2.GaussianBlur(view, (0, 0), blur)
    frame = np.zeros((h, w, 3), np.float32)
    top, left = (h - VIEW) // 2, (w - VIEW) // 2
    frame[top:top + VIEW, left:left + VIEW] = view
    frame *= _disc(w, h)
    if rng is not None:
        frame += _noise(w, h)[int(rng.integers(NOISE_FRAMES))]
    return np.clip(frame, 0, 255).astype(np.uint8)


@lru_cache(maxsize=4)
def _disc(w: int, h: int) -> np.ndarray:
    """The eyepiece's bright disc, darker towards its rim (vignetting); black outside."""
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (DISC_RADIUS * h) ** 2
    return np.where(r2 <= 1.0, 1.0 - 0.2 * r2, 0.0).astype(np.float32)[..., None]


NOISE_FRAMES = 16


@lru_cache(maxsize=2)
def _noise(w: int, h: int) -> np.ndarray:
    """Sensor noise (sigma 2 levels) for ``NOISE_FRAMES`` frames, drawn once: drawing it anew for
    every frame cost most of a simulated frame's time."""
    return np.random.default_rng(7).normal(0, 2.0, (NOISE_FRAMES, h, w, 3)).astype(np.float32)


@dataclass(frozen=True)
class Stop:
    """Hold the view at (x, y) for ``seconds``; ``blurred`` of them at the start are out of focus."""

    x: float
    y: float
    seconds: float
    blurred: float = 0.0


def scripted_path(stops: list[Stop], move_seconds: float, fps: float = 30.0) -> list[tuple[float, float, float, float]]:
    """(t, x, y, blur sigma) per frame: each stop held, then a straight move to the next."""
    frames: list[tuple[float, float, float, float]] = []
    t = 0.0
    for i, stop in enumerate(stops):
        for k in range(int(round(stop.seconds * fps))):
            frames.append((t, stop.x, stop.y, 3.0 if k / fps < stop.blurred else 0.0))
            t += 1 / fps
        if i + 1 < len(stops):
            nxt = stops[i + 1]
            n = int(round(move_seconds * fps))
            for k in range(1, n + 1):
                a = k / n
                frames.append((t, stop.x + a * (nxt.x - stop.x), stop.y + a * (nxt.y - stop.y), 0.0))
                t += 1 / fps
    return frames
