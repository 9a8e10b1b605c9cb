"""What a Pi camera through an eyepiece does to a field, as functions of one image.

The capture-condition suite (``edge.evaluation.robustness``) applies them at fixed, named strengths to
measure the device; training (``converter.augment``) draws them at random strengths so the
model has seen them. One implementation keeps what is trained and what is measured the same
physics. Each takes and returns an RGB uint8 image of unchanged shape.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import SegmentationParams, segment


def gain(rgb: np.ndarray, r: float, g: float, b: float) -> np.ndarray:
    """Per-channel gain: white balance (unequal) or exposure (equal); clips at white."""
    return np.clip(rgb.astype(np.float32) * np.array([r, g, b], np.float32), 0, 255).astype(np.uint8)


def vignette(rgb: np.ndarray, strength: float, centre: tuple[float, float] | None = None,
             radius: float | None = None) -> np.ndarray:
    """Darkening that grows with the square of the distance from ``centre``, by ``strength``
    at ``radius`` (default: the image centre and half its longer side)."""
    h, w = rgb.shape[:2]
    cx, cy = centre if centre is not None else (w / 2, h / 2)
    radius = radius if radius is not None else max(h, w) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / radius
    return np.clip(rgb * (1.0 - strength * np.clip(d, 0, 1) ** 2)[..., None], 0, 255).astype(np.uint8)


def glow(rgb: np.ndarray, amplitude: float, centre: tuple[float, float], sigma: float) -> np.ndarray:
    """Stray light: an additive Gaussian haze of ``amplitude`` grey levels."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    haze = amplitude * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma ** 2))
    return np.clip(rgb + haze[..., None], 0, 255).astype(np.uint8)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Defocus, as a Gaussian point spread of ``sigma`` pixels."""
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def gaussian_noise(rgb: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Read noise: independent Gaussian noise of ``sigma`` grey levels."""
    return np.clip(rgb + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def shot_noise(rgb: np.ndarray, rng: np.random.Generator, photons: float) -> np.ndarray:
    """Photon noise: Poisson counts with ``photons`` expected at white (fewer: dimmer, noisier)."""
    return np.clip(rng.poisson(rgb.astype(np.float64) / 255 * photons) / photons * 255, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip at ``quality`` (the camera's or a phone's compression)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise ValueError(f"OpenCV could not round-trip a {rgb.shape} field through JPEG quality {quality}")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def inverted_cells(rgb: np.ndarray, params: SegmentationParams) -> np.ndarray:
    """Every stained object's lightness turned inside out (dark rim, pale nucleus), its colour
    and the smear untouched: cells unlike anything the model was trained on, for measuring
    whether the out-of-distribution checks refuse them. A field with nothing stained is
    returned unchanged."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    stained = segment(normalise(rgb).rgb, params).mask
    mask = cv2.dilate(stained.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if not mask.any():
        return rgb.copy()
    light = lab[..., 0][mask].astype(np.int32)
    lab[..., 0][mask] = np.clip(light.max() + light.min() - light, 0, 255).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
