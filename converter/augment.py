"""Training augmentation: the capture conditions the device meets, at random strengths.

The training images come from one camera and one staining protocol; the device sees a Pi
camera through an eyepiece. Each training field is turned and flipped, then passed through
the same degradations the capture-condition suite measures (``edge.evaluation.degradation``), in the
order a camera meets them: light (white balance, exposure, stray light, vignetting), optics
(defocus), sensor (noise), encoder (JPEG). Strengths reach a little past what the quality
gate lets through, so a field at the gate's limit is not new to the model. Normalisation and
segmentation are applied afterwards (``converter.inputs``), as the device applies them.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.evaluation.degradation import blur, gain, gaussian_noise, glow, jpeg, shot_noise, vignette


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random camera-like variant of an RGB uint8 field (same shape)."""
    img = rgb
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    img = np.ascontiguousarray(np.rot90(img, int(rng.integers(4))))
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-20, 20)), float(rng.uniform(0.95, 1.1)))
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    if rng.random() < 0.8:  # white balance and exposure
        exposure = float(rng.uniform(0.7, 1.2))
        r, g, b = rng.uniform(0.82, 1.18, size=3)
        img = gain(img, exposure * r, exposure * g, exposure * b)
    if rng.random() < 0.15:  # stray light
        img = glow(img, float(rng.uniform(20, 90)), (float(rng.uniform(0, w)), float(rng.uniform(0, h))),
                   float(rng.uniform(0.2, 0.6) * w))
    if rng.random() < 0.3:
        img = vignette(img, float(rng.uniform(0.05, 0.3)))
    if rng.random() < 0.5:
        img = blur(img, float(rng.uniform(0.3, 2.5)))
    noise = rng.random()
    if noise < 0.25:
        img = gaussian_noise(img, rng, float(rng.uniform(1.0, 6.0)))
    elif noise < 0.4:
        img = shot_noise(img, rng, float(rng.uniform(1500.0, 10000.0)))  # sigma 2.5-6.6 at white
    if rng.random() < 0.4:
        img = jpeg(img, int(rng.integers(40, 96)))
    return img
