"""Augmentation that imitates a Pi camera looking through a microscope eyepiece.

The training images come from one camera and one staining protocol; the device sees
other optics. What changes between them is orientation, exposure, white balance,
focus and vignetting, so that is what is varied. Augmentation is applied to the
original field and the device-identical segmentation is computed from the augmented
image, as the device would.
"""

from __future__ import annotations

import cv2
import numpy as np


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random camera-like variant of an RGB uint8 field (same shape)."""
    img = rgb
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    img = np.ascontiguousarray(np.rot90(img, int(rng.integers(4))))
    h, w = img.shape[:2]
    angle = float(rng.uniform(-20, 20))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, float(rng.uniform(0.95, 1.1)))
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    x = img.astype(np.float32)
    gains = rng.uniform(0.92, 1.08, size=3).astype(np.float32)  # white balance
    contrast = float(rng.uniform(0.85, 1.15))
    brightness = float(rng.uniform(-20, 20))
    mean = x.mean()
    x = (x * gains - mean) * contrast + mean + brightness
    if rng.random() < 0.3:  # eyepiece vignetting
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (0.5 * max(h, w)) ** 2
        x *= (1.0 - float(rng.uniform(0.05, 0.25)) * r2)[..., None]
    img = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # mild defocus
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.2)))
    return img
