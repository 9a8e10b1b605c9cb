"""One frame in, one result out: field of view, resize, quality, normalisation,
segmentation, then either the field model (a field bundle) or the white cells one by one
(a cell bundle: magnification from the red cells, cell detection, per-cell inference, the
out-of-distribution checks on the cells' embeddings and appearance, the field call pooled
from the cells), then screening. Every command (classify, evaluate, bench, the daemon, the
converter's own evaluation) runs this same path, so what is measured offline is what the
device does."""

from __future__ import annotations

import copy
import time
from typing import TypedDict

import numpy as np

from edge.model.bundle import Bundle
from edge.analysis.quality import QualityConfig
from edge.analysis.fieldofview import crop_to_field
from edge.analysis.preprocess import fit_to_input
from edge.model.inference import BackendManager, Inference, timed_ms
from edge.analysis.normalisation import normalise
from edge.analysis.quality import GateLimits, cells_reason, measure_quality
from edge.analysis.cells import (FAINT_STAIN, NO_WHITE_CELLS, Cell, CellCall, CellCrops, cut_cells, detect_cells, four_class,
                                 measure_magnification, model_inputs as cell_inputs, pool, pool_share,
                                 working_scale)
from edge.analysis.appearance import features as appearance_features
from edge.analysis.result import Result
from edge.model.ood import OUT_OF_DISTRIBUTION
from edge.model.site_reference import SiteReference
from edge.model.views import EDGE_MARGIN, VIEW_POLICIES, ViewReader
from edge.analysis.screening import near_an_edge, screen
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
    views_read: int | None


def _checked(views: str) -> str:
    if views not in VIEW_POLICIES:
        raise ValueError(f"views {views!r}: one of {', '.join(VIEW_POLICIES)}")
    return views


class Pipeline:
    def __init__(self, bundle: Bundle, backends: BackendManager, quality: QualityConfig = QualityConfig(),
                 site_reference: SiteReference | None = None, views: str = "all") -> None:
        self.bundle, self.backends = bundle, backends
        #: How a cell's orientations are read (``edge.model.views``): "all" by default, as the
        #: converter fits and records a bundle; the device and the CLI pass ``inference.views``.
        self.views = _checked(views)
        if site_reference is not None and not site_reference.covers(bundle.model_id):
            raise ValueError(f"the site reference was measured with model {site_reference.model_id}; model "
                             f"{bundle.model_id} runs: fit a new reference with this model")
        #: This clinic's normal cells (``edge.model.site_reference``): a field familiar to it is
        #: read even when the training sites' checks find it foreign.
        self.site_reference = site_reference
        self.limits = GateLimits.resolve(bundle.manifest.get("quality_gate", {}).get("limits"), quality)
        #: The side the field is analysed at: the field model's input, or for a cell bundle the
        #: side its gate and its cell scale were fitted at (cells are cut from that field).
        self.field_side = int(bundle.manifest.get("field_side", FIELD_SIDE)) if bundle.kind == "cells" \
            else backends.input_side

    def reading_views(self, views: str) -> "Pipeline":
        """This pipeline (same bundle, backends, gate and site reference) reading a cell's
        orientations as ``views`` says: how ``evaluate --compare-views`` reads a field both ways."""
        other = copy.copy(self)
        other.views = _checked(views)
        return other

    @classmethod
    def on_cpu(cls, bundle: Bundle, threads: int = 2, quality: QualityConfig = QualityConfig(),
               views: str = "all") -> "Pipeline":
        return cls(bundle, BackendManager(bundle.cpu_model, None, mode="cpu", threads=threads), quality, views=views)

    def measure_cells(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The appearance rows and embeddings of a frame's cells, cut and read as ``process``
        does, with no out-of-distribution check applied: what a site reference is fitted on.
        None when the field is refused before its cells are read (``process`` says why)."""
        if self.bundle.kind != "cells" or self.bundle.cells is None:
            raise ValueError(f"bundle {self.bundle.model_id} is a {self.bundle.kind} bundle: it reads no cells")
        rgb, seg, reasons, timings, _ = self._front(frame, "site-reference")
        cut = self._cut(rgb, seg, reasons, timings)
        if isinstance(cut, tuple) and not reasons:
            cells, crops, _ = cut
            first, second = cell_inputs(crops)
            # the embedding is the upright view's however many views are read (edge.model.views)
            embeddings = [o.embedding for o in ViewReader(self.backends.infer_views, first, second, 1).outputs()]
            if any(e is None for e in embeddings):
                raise ValueError(f"{self.bundle.root}: the cell model gives no embedding")
            return appearance_features(crops, self.bundle.cells), np.stack([e for e in embeddings if e is not None])
        return None

    def _front(self, frame: np.ndarray, source: str) -> tuple[np.ndarray, Segmentation, list[str], dict[str, float],
                                                                _Common]:
        """Field of view, size, quality gate, normalisation and segmentation of a frame."""
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
        return normalised.rgb, seg, reasons, timings, common

    def process(self, frame: np.ndarray, source: str = "file") -> Result:
        """Analyse one RGB uint8 frame of any size. A field failing the quality gate or
        showing no cells is returned as ``rejected`` with reasons and is not classified."""
        rgb, seg, reasons, timings, common = self._front(frame, source)
        if self.bundle.kind == "cells":
            return self._cells(rgb, seg, reasons, timings, common)
        if not reasons and (no_cells := cells_reason(seg)):
            reasons.append(no_cells)
        if reasons:
            return Result("rejected", reasons, None, raw_probabilities=None, backend=None, timings_ms=timings, **common)
        raw, backend, inference_ms = self.backends.probabilities(rgb, seg.segmented)
        timings["inference"] = inference_ms
        t = time.perf_counter()
        screening = screen(raw, self.bundle.calibration)
        timings["screening"] = timed_ms(t)
        return Result("classified", [], screening, raw_probabilities=raw, backend=backend, timings_ms=timings, **common)

    def _cut(self, rgb: np.ndarray, seg: Segmentation, reasons: list[str], timings: dict[str, float]
             ) -> tuple[list[Cell], CellCrops, float | None] | float | None:
        """The field's cells and their crops, or (a reason appended to ``reasons``) the red-cell
        ruler measured before the field was refused."""
        params = self.bundle.cells
        assert params is not None
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
            return rbc
        assert labels is not None  # cells were found, so they were labelled
        t = time.perf_counter()
        crops = cut_cells(rgb, labels, cells, px_per_um, params, seg.element)
        timings["cell_crops"] = timed_ms(t)
        return cells, crops, rbc

    def _cells(self, rgb: np.ndarray, seg: Segmentation, reasons: list[str], timings: dict[str, float],
               common: _Common) -> Result:
        """A cell bundle's reading of a normalised field that passed (or failed) the gate."""
        params, ood, site = self.bundle.cells, self.bundle.ood, self.site_reference
        assert params is not None and ood is not None  # load_bundle checked both
        cut = self._cut(rgb, seg, reasons, timings)
        if not isinstance(cut, tuple):
            common["ruler_px"] = cut
            return Result("rejected", reasons, None, raw_probabilities=None, backend=None, timings_ms=timings, **common)
        cells, crops, rbc = cut
        first, second = cell_inputs(crops)
        looks, foreign_look, field_look = [None] * len(cells), False, None
        rows = appearance_features(crops, params) if self.bundle.appearance is not None or site is not None else None
        if (appearance := self.bundle.appearance) is not None:
            t = time.perf_counter()
            assert rows is not None
            looks = appearance.distances(rows).tolist()
            field_look = appearance.field_distance(np.asarray(looks), rows)
            foreign_look = field_look > appearance.limit
            if foreign_look and site is not None:  # unlike the training sites: like this clinic's normal slides?
                foreign_look = site.appearance.field_distance(site.appearance.distances(rows), rows) > site.appearance.limit
            timings["appearance"] = timed_ms(t)
        reader = ViewReader(self.backends.infer_views, first, second, params.views, self.bundle.cell_labels)
        t = time.perf_counter()
        # the embedding is the upright view's whatever else is read (edge.model.views), so the
        # out-of-distribution check needs no more than the first read
        embeddings = [o.embedding for o in reader.outputs()]
        if any(e is None for e in embeddings):
            raise ValueError(f"{self.bundle.root}: the cell model gives no embedding, so its cells cannot be checked")
        stacked = np.stack([e for e in embeddings if e is not None])
        distances = ood.distances(stacked)
        familiar = distances <= ood.limit
        if site is not None:  # a cell like this clinic's normal cells is familiar too
            familiar |= site.embedding.distances(stacked) <= site.embedding.limit
        timings["ood"] = timed_ms(t)
        if self.views == "all":
            reader.complete()
        else:
            reader.complete(reader.unsettled())
            raw, counted = self._pooled(reader.outputs(), familiar)
            # a call that could turn on a view, and every positive call (its subtype hint and its
            # blast count are what the figures were fitted and recorded on), read in every view
            if raw is not None and (near_an_edge(raw, self.bundle.calibration, EDGE_MARGIN)
                                    or screen(raw, self.bundle.calibration, int(counted.sum())).call == "positive"):
                reader.complete()
        outputs, backend = reader.outputs(), reader.backend
        timings["inference"] = reader.ms
        common["views_read"] = reader.views_read()
        t = time.perf_counter()
        probabilities = np.stack([o.probabilities for o in outputs])
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
        raw, counted = self._pooled(outputs, familiar)
        if raw is None:
            timings["screening"] = timed_ms(t)
            return Result("rejected", [NO_WHITE_CELLS], None, raw_probabilities=None, backend=backend,
                          timings_ms=timings, **common)
        screening = screen(raw, self.bundle.calibration, cells=int(counted.sum()))
        timings["screening"] = timed_ms(t)
        return Result("classified", [], screening, raw_probabilities=raw, backend=backend, timings_ms=timings,
                      **common)

    def _pooled(self, outputs: list[Inference], familiar: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """The field's raw four-label probabilities pooled from the cells' outputs (None when no
        cell is a white cell) and which cells were counted: what is not a white cell (a platelet
        clump, a smudge) neither votes in the field's call nor counts."""
        names = self.bundle.cell_labels
        probabilities = np.stack([o.probabilities for o in outputs])
        counted = np.array([CellCall.counts(names[int(np.argmax(p))], bool(f)) for p, f in zip(probabilities, familiar)],
                           bool)
        if not counted.any():
            return None, counted
        pooling = pool_share if self.bundle.differential else pool
        return pooling(four_class(probabilities[counted], names)).astype(np.float32), counted
