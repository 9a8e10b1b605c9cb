"""Cells of a labelled dataset, cut as the device cuts them, with weak labels from the field.

Every white cell of a field inherits the field's class: a malignant field's cells are taken
as blasts of its subtype, a benign field's as hematogones. That label is noisy (a malignant
field also holds the odd neutrophil or lymphocyte), which the model treats with label
smoothing and the field call treats by pooling over the field's cells (``converter.cell_train``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from edge.analysis.cells import CellParams, cut_cells, detect_cells, measure_magnification, working_scale
from edge.evaluation.dataset import Sample
from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import LABELS
from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import SegmentationParams, segment


@dataclass
class CellSet:
    """Crops of many fields: ``field[i]`` indexes ``keys`` for cell ``i``."""

    rgb: np.ndarray  # (N, side, side, 3) uint8
    own: np.ndarray  # (N, side, side) bool
    near: np.ndarray  # (N, side, side) bool
    field: np.ndarray  # (N,) int
    keys: list[str]  # one per field
    field_labels: np.ndarray  # (F,) int, index into LABELS
    rbc_px: np.ndarray  # (F,) float, NaN where not measured
    refused: list[tuple[str, str]]  # (key, reason) of fields with no cell or a wrong scale
    #: (N,) int: a cell's own label where it is known better than its field's (a pseudo-label,
    #: ``converter.differential_data.pseudo_label``); None: every cell takes its field's label.
    cell_labels: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.field_labels[self.field] if self.cell_labels is None else self.cell_labels

    def save(self, path) -> None:
        np.savez_compressed(path, rgb=self.rgb, own=self.own, near=self.near, field=self.field,
                            keys=np.array(self.keys), field_labels=self.field_labels, rbc_px=self.rbc_px,
                            refused=np.array(self.refused, dtype=str).reshape(-1, 2))

    @classmethod
    def load(cls, path) -> "CellSet":
        d = np.load(path)
        return cls(d["rgb"], d["own"], d["near"], d["field"], list(d["keys"]), d["field_labels"], d["rbc_px"],
                   [tuple(r) for r in d["refused"]])


def extract(samples: Iterable[Sample], seg: SegmentationParams, params: CellParams,
            log: Callable[[str], None] = print) -> CellSet:
    """Cut every white cell of every field the way the device does (normalise, segment,
    measure the red cells, detect, cut)."""
    rgb, own, near, field, keys, labels, rbc, refused = [], [], [], [], [], [], [], []
    samples = list(samples)
    for n, sample in enumerate(samples):
        field_rgb = normalise(read_rgb(sample.path)).rgb
        segmentation = segment(field_rgb, seg)
        magnification = measure_magnification(field_rgb, segmentation.mask, seg.element)
        px_per_um, reason = working_scale(magnification, params)
        cells, label_image = detect_cells(segmentation, px_per_um, params) if reason is None else ([], None)
        keys.append(sample.key)
        labels.append(LABELS.index(sample.label))
        rbc.append(np.nan if magnification.ruler_px is None else magnification.ruler_px)
        if reason or not cells:
            refused.append((sample.key, reason or "no white cells in view"))
            continue
        assert label_image is not None  # cells were found, so they were labelled
        crops = cut_cells(field_rgb, label_image, cells, px_per_um, params, seg.element)
        rgb.append(crops.rgb)
        own.append(crops.own)
        near.append(crops.near)
        field.extend([len(keys) - 1] * len(crops))
        if (n + 1) % 250 == 0:
            log(f"cells: {n + 1}/{len(samples)} fields, {len(field)} cells")
    side = params.crop_px
    empty = np.zeros((0, side, side, 3), np.uint8)
    return CellSet(np.concatenate(rgb) if rgb else empty, np.concatenate(own) if own else empty[..., 0] > 0,
                   np.concatenate(near) if near else empty[..., 0] > 0, np.asarray(field, np.int64), keys,
                   np.asarray(labels, np.int64), np.asarray(rbc, np.float64), refused)
