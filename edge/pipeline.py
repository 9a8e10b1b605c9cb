"""One frame in, one result out: field of view, resize, quality, normalisation,
segmentation, then either the field model (a field bundle) or the white cells one by one
(a cell bundle: magnification from the red cells, cell detection, per-cell inference, the
out-of-distribution checks on the cells' embeddings and appearance, the field call pooled
from the cells), then screening. Every command (classify, evaluate, bench, the daemon, the
converter's own evaluation) runs this same path, so what is measured offline is what the
device does."""

from __future__ import annotations

import time
from typing import TypedDict

import numpy as np

from edge.model.bundle import Bundle
from edge.analysis.quality import QualityConfig
from edge.analysis.fieldofview import crop_to_field
from edge.analysis.preprocess import fit_to_input
from edge.model.inference import BackendManager, timed_ms
from edge.analysis.normalisation import normalise
from edge.analysis.quality import GateLimits, cells_reason, measure_quality
from edge.analysis.cells import (FAINT_STAIN, NO_WHITE_CELLS, CellCall, cut_cells, detect_cells, four_class,
                                 measure_magnification, model_inputs as cell_inputs, pool, pool_share,
                                 working_scale)
from edge.analysis.appearance import features as appearance_features
from edge.analysis.result import Result
from edge.model.ood import OUT_OF_DISTRIBUTION
from edge.model.views import read_cell
from edge.analysis.screening import screen
from edge.analysis.segmentation import REFERENCE_SIDE as FIELD_SIDE, Segmentation, segment
from edge.analysis.fieldofview import FieldOfView
from edge.analysis.quality import Quality


class _Common(TypedDict, total=False):
    """What every result of one frame carries, classified or not (``Result``'s own fields)."""

    quality: Quality
    segmentation: Segmentation
    field_rgb: np.ndarray
    model_id: str
    source: str
    field_of_view: FieldOfView | None
    cells: list[CellCall] | None
    ruler_px: float | None
    appearance_distance: float | None


class Pipeline:
    def __init__(self, bundle: Bundle, backends: BackendManager, quality: QualityConfig = QualityConfig()) -> None:
        self.bundle, self.backends = bundle, backends
        self.limits = GateLimits.resolve(bundle.manifest.get("quality_gate", {}).get("limits"), quality)
        #: The side the field is analysed at: the field model's input, or for a cell bundle the
        #: side its gate and its cell scale were fitted at (cells are cut from that field).
        self.field_side = int(bundle.manifest.get("field_side", FIELD_SIDE)) if bundle.kind == "cells" \
            else backends.input_side

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
        field_rgb = np.ascontiguousarray(fit_to_input(cropped, self.field_side))
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
        common = _Common(quality=quality, segmentation=seg, field_rgb=field_rgb, model_id=self.bundle.model_id,
                         source=source, field_of_view=fov)
        if self.bundle.kind == "cells":
            return self._cells(normalised.rgb, seg, reasons, timings, common)
        if not reasons and (no_cells := cells_reason(seg)):
            reasons.append(no_cells)
        if reasons:
            return Result("rejected", reasons, None, raw_probabilities=None, backend=None, timings_ms=timings, **common)
        raw, backend, inference_ms = self.backends.probabilities(normalised.rgb, seg.segmented)
        timings["inference"] = inference_ms
        t = time.perf_counter()
        screening = screen(raw, self.bundle.calibration)
        timings["screening"] = timed_ms(t)
        return Result("classified", [], screening, raw_probabilities=raw, backend=backend, timings_ms=timings, **common)

    def _cells(self, rgb: np.ndarray, seg: Segmentation, reasons: list[str], timings: dict[str, float],
               common: _Common) -> Result:
        """A cell bundle's reading of a normalised field that passed (or failed) the gate."""
        params, ood = self.bundle.cells, self.bundle.ood
        assert params is not None and ood is not None  # load_bundle checked both
        rbc = None
        if not reasons and seg.empty:  # nothing stained at all: say so, before measuring the scale of nothing
            reasons.append(FAINT_STAIN if seg.faint else NO_WHITE_CELLS)
        if not reasons:
            t = time.perf_counter()
            magnification = measure_magnification(rgb, seg.mask, seg.element)
            rbc = magnification.ruler_px
            px_per_um, wrong_scale = working_scale(magnification, params)
            cells, labels = ([], None) if wrong_scale else detect_cells(seg, px_per_um, params)
            timings["cells"] = timed_ms(t)
            if wrong_scale:
                reasons.append(wrong_scale)
            elif not cells:
                reasons.append(NO_WHITE_CELLS)
        if reasons:
            common["ruler_px"] = rbc
            return Result("rejected", reasons, None, raw_probabilities=None, backend=None, timings_ms=timings, **common)
        assert labels is not None  # cells were found, so they were labelled
        t = time.perf_counter()
        crops = cut_cells(rgb, labels, cells, px_per_um, params, seg.element)
        first, second = cell_inputs(crops)
        timings["cell_crops"] = timed_ms(t)
        looks, foreign_look, field_look = [None] * len(cells), False, None
        if (appearance := self.bundle.appearance) is not None:
            t = time.perf_counter()
            looks = appearance.distances(appearance_features(crops, params)).tolist()
            field_look = appearance.field_distance(np.asarray(looks))
            foreign_look = field_look > appearance.limit
            timings["appearance"] = timed_ms(t)
        outputs, inference_ms, backend = [], 0.0, "cpu"
        for a, b in zip(first, second):
            out, backend, ms = read_cell(self.backends.infer, a, b, params.views)
            outputs.append(out)
            inference_ms += ms
        timings["inference"] = inference_ms
        t = time.perf_counter()
        probabilities = np.stack([o.probabilities for o in outputs])
        embeddings = [o.embedding for o in outputs]
        if any(e is None for e in embeddings):
            raise ValueError(f"{self.bundle.root}: the cell model gives no embedding, so its cells cannot be checked")
        distances = ood.distances(np.stack([e for e in embeddings if e is not None]))
        familiar = distances <= ood.limit
        names = self.bundle.cell_labels
        calls = [CellCall(cell, names[int(np.argmax(p))], {lab: float(v) for lab, v in zip(names, p)}, float(d), bool(f),
                          look)
                 for cell, p, d, f, look in zip(cells, probabilities, distances, familiar, looks)]
        common["cells"], common["ruler_px"], common["appearance_distance"] = calls, rbc, field_look
        # most cells unlike the training cells, or the field's cells looking unlike them: refuse the field
        if foreign_look or 2 * familiar.sum() < len(cells):
            timings["screening"] = timed_ms(t)
            return Result("rejected", [OUT_OF_DISTRIBUTION], None, raw_probabilities=None, backend=backend,
                          timings_ms=timings, **common)
        # one cell, one vote: what the model reads as not a white cell (a platelet clump, a smudge)
        # neither votes in the field's call nor counts
        counted = np.array([c.counted for c in calls])
        if not counted.any():
            timings["screening"] = timed_ms(t)
            return Result("rejected", [NO_WHITE_CELLS], None, raw_probabilities=None, backend=backend,
                          timings_ms=timings, **common)
        pooling = pool_share if self.bundle.differential else pool
        raw = pooling(four_class(probabilities[counted], names)).astype(np.float32)
        screening = screen(raw, self.bundle.calibration, cells=int(counted.sum()))
        timings["screening"] = timed_ms(t)
        return Result("classified", [], screening, raw_probabilities=raw, backend=backend, timings_ms=timings,
                      **common)
