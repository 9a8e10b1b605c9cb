"""The quality gate: is this field worth classifying?

A blurred, washed-out, noisy or empty field gives a confident-looking but meaningless
answer, so such frames are stored as *rejected* with reasons a technician can act on ("out of
focus": turn the fine focus; "overexposed": dim the lamp; "too noisy": more light, less gain)
instead of being classified. Figures are computed on the 224x224 model input, the scale the
thresholds were set at.

Noise is checked before focus: pixel noise inflates the Laplacian, so a blurred, noisy field
passed the focus test and malignant fields were then called negative (``blastscope-edge
robustness``, "defocus sigma 2 + noise sigma 5" and the noise conditions). The noise figure is
Immerkaer's estimate (Fast Noise Variance Estimation, 1996): the mean absolute response to a
kernel that cancels smooth image structure, scaled to a Gaussian sigma.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from edge.config import QualityConfig
from edge.segmentation import Segmentation


@dataclass(frozen=True)
class Quality:
    focus: float  # variance of the Laplacian
    clipped_fraction: float  # pixels saturated in every channel
    brightness: float  # mean grey level
    noise: float = 0.0  # estimated pixel noise sigma (grey levels)
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {"ok": self.ok, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}}


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's pixel-noise estimate of a grey image, in grey levels."""
    h, w = grey.shape
    response = cv2.filter2D(grey.astype(np.float32), -1, _NOISE_KERNEL)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).sum() / (6 * (w - 2) * (h - 2)))


def measure_quality(field_rgb: np.ndarray, cfg: QualityConfig) -> Quality:
    """Focus and exposure figures and the reasons, if any, to reject the field."""
    grey = cv2.cvtColor(field_rgb, cv2.COLOR_RGB2GRAY)
    focus = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    clipped = float(np.all(field_rgb >= 250, axis=2).mean())
    brightness = float(grey.mean())
    noise = noise_sigma(grey)
    reasons = []
    if clipped > cfg.max_clipped:
        reasons.append(f"overexposed: lower the lamp or the exposure and analyse again ({clipped:.0%} of the field is saturated)")
    elif brightness < cfg.min_brightness:
        reasons.append(f"too dark: raise the lamp or open the diaphragm and analyse again (mean brightness {brightness:.0f})")
    elif noise > cfg.max_noise:
        reasons.append(f"too noisy: add light or lower the camera gain and analyse again (noise {noise:.1f}, "
                       f"limit {cfg.max_noise:g})")
    elif focus < cfg.min_focus:
        reasons.append(f"out of focus: turn the fine focus and analyse again (sharpness {focus:.0f}, needs {cfg.min_focus:.0f})")
    return Quality(focus, clipped, brightness, noise, reasons)


def cells_reason(segmentation: Segmentation) -> str | None:
    """The rejection reason when segmentation found no cells."""
    return None if not segmentation.empty else f"no cells in view: {segmentation.reason}"
