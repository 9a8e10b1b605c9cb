"""The differential on pbc-normal's cells, read as the device reads them (issue 32):
``blastscope-edge evaluate --data <pbc-normal>``.

Each labelled cell is brought to the model's scale and degraded to the first site's
resolution (``edge.evaluation.pbc``), cut by the device's own detector, and read through the
pipeline's backends in the bundle's orientations (int8, as on the device). The figures are the
issue's targets: the 8-class accuracy, every class's recall, normal cells called blast, and
the confusion between classes (the model card's table). The split is by image, since the
dataset has no patient identifiers: every figure says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge.analysis.cells import model_inputs
from edge.analysis.imagefile import read_rgb
from edge.evaluation.pbc import PBC_CLASSES, PBC_PX_PER_UM, centre_cell, degrade, pbc_files
from edge.model.views import read_cell_batched
from edge.pipeline import Pipeline

#: The B-ALL labels a cell of the differential can be called: a normal cell called one of
#: them is a "normal cell called blast".
BLAST_LABELS = ("early_pre_b", "pre_b", "pro_b")
#: The issue's targets on pbc-normal's test split.
TARGETS = {"accuracy": 0.95, "recall": 0.90, "normal_called_blast": 0.01}


def is_pbc_normal(root: Path) -> bool:
    """pbc-normal's layout: ``images/<class>/`` with its class folders."""
    return (Path(root) / "images").is_dir() and any((Path(root) / "images" / c).is_dir() for c in PBC_CLASSES)


@dataclass(frozen=True)
class CellReport:
    """What the differential read for one split of pbc-normal."""

    split: str
    model_id: str
    backend: str
    labels: tuple[str, ...]  # the classes present, in the model's order
    #: truth -> {called -> count}, over every class the model can call
    confusion: dict[str, dict[str, int]]
    no_cell: int  # images where the device found no cell at the centre

    @property
    def n(self) -> int:
        return sum(sum(row.values()) for row in self.confusion.values())

    def recall(self, label: str) -> float:
        row = self.confusion[label]
        return row.get(label, 0) / max(1, sum(row.values()))

    @property
    def accuracy(self) -> float:
        return sum(row.get(label, 0) for label, row in self.confusion.items()) / max(1, self.n)

    @property
    def normal_called_blast(self) -> float:
        return sum(row.get(b, 0) for row in self.confusion.values() for b in BLAST_LABELS) / max(1, self.n)

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "split_by": "image (no patient identifiers)", "model_id": self.model_id,
                "backend": self.backend, "cells": self.n, "no_cell_found": self.no_cell,
                "accuracy": round(self.accuracy, 4), "recall": {k: round(self.recall(k), 4) for k in self.labels},
                "normal_called_blast": round(self.normal_called_blast, 4), "confusion": self.confusion,
                "targets": TARGETS}

    def table(self) -> str:
        """The model card's confusion table (markdown): rows the truth, columns the call."""
        called = [c for c in self.confusion[self.labels[0]]]
        head = "| truth \\ called | " + " | ".join(called) + " | recall |"
        rule = "|---" * (len(called) + 2) + "|"
        rows = [f"| {t} | " + " | ".join(str(self.confusion[t].get(c, 0)) for c in called)
                + f" | {100 * self.recall(t):.1f}% |" for t in self.labels]
        return "\n".join([head, rule, *rows])


def evaluate_cells(pipeline: Pipeline, root: Path, split: str = "test", every: int = 1,
                   log: Callable[[str], None] = lambda _m: None) -> CellReport:
    """Read every ``every``-th cell of ``split`` of pbc-normal at ``root`` through ``pipeline``."""
    bundle = pipeline.bundle
    params, names = bundle.cells, bundle.cell_labels
    if params is None or not bundle.differential:
        raise ValueError(f"model {bundle.model_id} is not a differential (no cell classes): "
                         "pbc-normal's cells are labelled by kind")
    files = [f for f in pbc_files(root) if split == "all" or f[2] == split][::every]
    if not files:
        raise ValueError(f"{root}: no pbc-normal images in the {split} split")
    present = tuple(n for n in names if n in set(PBC_CLASSES.values()))
    confusion = {t: {c: 0 for c in names} for t in present}
    no_cell, backend = 0, "cpu"
    for i, (path, label, _) in enumerate(files):
        image = degrade(read_rgb(path), PBC_PX_PER_UM, params.model_px_per_um)
        crops = centre_cell(image, bundle.segmentation, params, platelet=label == "not_a_white_cell")
        if crops is None:
            no_cell += 1
            continue
        first, second = model_inputs(crops)
        out, backend, _ = read_cell_batched(pipeline.backends.infer_views, first[0], second[0], params.views)
        confusion[label][names[int(np.argmax(out.probabilities))]] += 1
        if (i + 1) % 500 == 0:
            log(f"{i + 1}/{len(files)} cells read")
    return CellReport(split, bundle.model_id, backend, present, confusion, no_cell)
