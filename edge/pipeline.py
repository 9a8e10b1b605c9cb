"""One frame in, one result out: field of view, resize, quality, normalisation,
segmentation, inference, screening. Every command (classify, evaluate, bench, the daemon, the converter's own
evaluation) runs this same path, so what is measured offline is what the device does."""

from __future__ import annotations

import time

import cv2
import numpy as np

from edge.bundle import Bundle
from edge.config import QualityConfig
from edge.fieldofview import crop_to_field
from edge.inference import BackendManager, timed_ms
from edge.normalisation import normalise
from edge.quality import GateLimits, cells_reason, measure_quality
from edge.result import Result
from edge.screening import screen
from edge.segmentation import SegmentationParams, segment


def fit_to_input(rgb: np.ndarray, side: int) -> np.ndarray:
    """Resize a field to the model's square input as training did (area interpolation)."""
    if rgb.shape[:2] == (side, side):
        return rgb
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


def model_inputs(frame: np.ndarray, params: SegmentationParams, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The two images the model reads for a frame (original field, segmented field), exactly
    as ``Pipeline.process`` makes them but without the quality gate: reference outputs use it."""
    cropped, _ = crop_to_field(frame)
    field_rgb = normalise(np.ascontiguousarray(fit_to_input(cropped, side))).rgb
    return field_rgb, segment(field_rgb, params).segmented


class Pipeline:
    def __init__(self, bundle: Bundle, backends: BackendManager, quality: QualityConfig = QualityConfig()) -> None:
        self.bundle, self.backends = bundle, backends
        self.limits = GateLimits.resolve(bundle.manifest.get("quality_gate", {}).get("limits"), quality)

    @classmethod
    def on_cpu(cls, bundle: Bundle, threads: int = 2, quality: QualityConfig = QualityConfig()) -> "Pipeline":
        return cls(bundle, BackendManager(bundle.cpu_model, None, mode="cpu", threads=threads), quality)

    def process(self, frame: np.ndarray, source: str = "file") -> Result:
        """Analyse one RGB uint8 frame of any size. A field failing the quality gate or
        showing no cells is returned as ``rejected`` with reasons and is not classified."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        cropped, fov = crop_to_field(frame)
        timings["field_of_view"] = timed_ms(t)
        t = time.perf_counter()
        field_rgb = np.ascontiguousarray(fit_to_input(cropped, self.backends.input_side))
        timings["resize"] = timed_ms(t)
        t = time.perf_counter()
        quality = measure_quality(field_rgb, self.limits)
        timings["quality"] = timed_ms(t)
        t = time.perf_counter()
        normalised = normalise(field_rgb)
        timings["normalisation"] = timed_ms(t)
        t = time.perf_counter()
        seg = segment(normalised.rgb, self.bundle.segmentation)
        timings["segmentation"] = timed_ms(t)
        reasons = list(quality.reasons)
        if not reasons and (no_cells := cells_reason(seg)):
            reasons.append(no_cells)
        common = dict(quality=quality, segmentation=seg, field_rgb=field_rgb, model_id=self.bundle.model_id,
                      source=source, field_of_view=fov)
        if reasons:
            return Result("rejected", reasons, None, raw_probabilities=None, backend=None, timings_ms=timings, **common)
        raw, backend, inference_ms = self.backends.probabilities(normalised.rgb, seg.segmented)
        timings["inference"] = inference_ms
        t = time.perf_counter()
        screening = screen(raw, self.bundle.calibration)
        timings["screening"] = timed_ms(t)
        return Result("classified", [], screening, raw_probabilities=raw, backend=backend, timings_ms=timings, **common)
