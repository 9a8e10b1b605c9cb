"""The quality gate: is this field worth classifying?

A blurred, washed-out or empty field gives a confident-looking but meaningless answer, so
such frames are stored as *rejected* with reasons a technician can act on ("out of focus":
turn the fine focus; "overexposed": dim the lamp) instead of being classified.
Figures are computed on the 224x224 model input, the scale the thresholds were set at.
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
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {"ok": self.ok, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}}


def measure_quality(field_rgb: np.ndarray, cfg: QualityConfig) -> Quality:
    """Focus and exposure figures and the reasons, if any, to reject the field."""
    grey = cv2.cvtColor(field_rgb, cv2.COLOR_RGB2GRAY)
    focus = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    clipped = float(np.all(field_rgb >= 250, axis=2).mean())
    brightness = float(grey.mean())
    reasons = []
    if clipped > cfg.max_clipped:
        reasons.append(f"overexposed: lower the lamp or the exposure and analyse again ({clipped:.0%} of the field is saturated)")
    elif brightness < cfg.min_brightness:
        reasons.append(f"too dark: raise the lamp or open the diaphragm and analyse again (mean brightness {brightness:.0f})")
    elif focus < cfg.min_focus:
        reasons.append(f"out of focus: turn the fine focus and analyse again (sharpness {focus:.0f}, needs {cfg.min_focus:.0f})")
    return Quality(focus, clipped, brightness, reasons)


def cells_reason(segmentation: Segmentation) -> str | None:
    """The rejection reason when segmentation found no cells."""
    return None if not segmentation.empty else f"no cells in view: {segmentation.reason}"
