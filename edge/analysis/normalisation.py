"""Colour and exposure normalisation to the smear background.

Every field has background: plasma between the cells, the brightest part of a smear. Its
colour is the lamp, the camera's white balance and the exposure, not the patient, so each
channel is scaled to bring the background to one neutral level before segmentation and
inference. A warm or cool white balance, a green cast, a dimmer lamp and the dataset's own
patient-to-patient colour drift then reach the model (and the a* 2-means of the
segmentation) as the same field. Training applies the same function to every augmented
field (``converter.inputs``), so the model never sees un-normalised colour.

Gains are bounded: a field needing more than ``MAX_GAIN`` is too dark to rescue (the quality
gate rejects it first), and saturated pixels cannot be un-clipped, which is why the gate's
overexposure limit is checked on the raw field, before this step.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Background level every channel is brought to: below white, so gains above 1 do not clip
#: the background, and near the dataset's own background (about 248 per channel).
TARGET_LEVEL = 242.0
#: Fraction of the brightest pixels (grey level) taken as background.
BACKGROUND_FRACTION = 0.25
MIN_GAIN, MAX_GAIN = 0.7, 1.6


@dataclass(frozen=True)
class Normalised:
    rgb: np.ndarray  # HxWx3 uint8, the field with its background neutral at TARGET_LEVEL
    background: tuple[float, float, float]  # the raw background colour that was measured
    gains: tuple[float, float, float]


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """Median colour of the brightest quarter of the field (its background), from every
    third pixel: the background is large and smooth, and this runs on every frame."""
    pixels = rgb.reshape(-1, 3)[::3]
    grey = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = grey >= np.quantile(grey, 1.0 - BACKGROUND_FRACTION)
    return np.median(pixels[bright], axis=0).astype(np.float64)


def normalise(rgb: np.ndarray) -> Normalised:
    """The field with per-channel gains that bring its background to ``TARGET_LEVEL``."""
    background = background_colour(rgb)
    gains = np.clip(TARGET_LEVEL / np.maximum(background, 1.0), MIN_GAIN, MAX_GAIN)
    # the gains applied through a lookup table of each channel's 256 levels: the same
    # arithmetic as scaling every pixel, done once per level instead of once per pixel
    levels = np.arange(256, dtype=np.float32)[:, None] * gains.astype(np.float32) + 0.5
    table = np.clip(levels, 0, 255).astype(np.uint8).reshape(256, 1, 3)
    out = cv2.LUT(np.ascontiguousarray(rgb, dtype=np.uint8), table)
    b, g = [round(float(v), 1) for v in background], [round(float(v), 4) for v in gains]
    return Normalised(out, (b[0], b[1], b[2]), (g[0], g[1], g[2]))
