"""One field in, one screening answer out: resize, segment, infer, screen.

This is the whole per-field path shared by ``classify``, ``evaluate`` and the daemon,
so what is measured offline is what runs on the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.bundle import Bundle
from edge.inference import Backend, CpuBackend, timed_ms
from edge.screening import Screening, screen
from edge.segmentation import Segmentation, segment


@dataclass
class Classification:
    screening: Screening | None  # None when segmentation found nothing to classify
    segmentation: Segmentation
    raw_probabilities: np.ndarray | None
    backend: str
    model_id: str
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "classified": self.screening is not None,
            "cell_count": self.segmentation.cell_count,
            "area_fraction": round(self.segmentation.area_fraction, 4),
            "backend": self.backend,
            "model_id": self.model_id,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }
        if self.screening is not None:
            out.update(self.screening.to_dict())
        else:
            out["reason"] = self.segmentation.reason
        return out


def fit_to_input(rgb: np.ndarray, side: int) -> np.ndarray:
    """Resize a field to the model's square input as training did (area interpolation)."""
    if rgb.shape[:2] == (side, side):
        return rgb
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


class Classifier:
    def __init__(self, bundle: Bundle, backend: Backend | None = None, num_threads: int = 2) -> None:
        self.bundle = bundle
        self.backend = backend if backend is not None else CpuBackend(bundle.cpu_model, num_threads)

    def classify(self, rgb: np.ndarray) -> Classification:
        """Classify one RGB uint8 field of any size. A field in which segmentation finds
        no cells is not classified: the model was never trained on empty fields."""
        t = time.perf_counter()
        field_rgb = fit_to_input(rgb, self.backend.input_side)
        timings = {"resize": timed_ms(t)}
        t = time.perf_counter()
        seg = segment(field_rgb, self.bundle.segmentation)
        timings["segmentation"] = timed_ms(t)
        if seg.empty:
            return Classification(None, seg, None, self.backend.name, self.bundle.model_id, timings)
        t = time.perf_counter()
        raw = self.backend.probabilities(field_rgb, seg.segmented)
        timings["inference"] = timed_ms(t)
        result = screen(raw, self.bundle.calibration)
        return Classification(result, seg, raw, self.backend.name, self.bundle.model_id, timings)
