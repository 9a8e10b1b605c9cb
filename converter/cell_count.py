"""Fit the fewest recognised white cells a negative field call may rest on
(``Calibration.min_cells_to_clear``, ``blastscope-convert fit-cell-count``).

A cell bundle's field call pools the field's recognised cells. A field read from one or two
cells carries one or two cells' evidence, and the cells a malignant field is most often
cleared on are lymphocyte-like blasts, which the model reads as benign; a field with many red
cells and one white cell is common on a real slide. The count is fitted on the validation
split, through the device pipeline, under every condition of the capture suite (the
target is that none of them calls a malignant field negative without a warning, and a cast,
the eyepiece's vignette or stray light leaves some fields fewer recognised cells), with the
bundle's calibration and no count rule: among the fields called negative, those
resting on exactly k cells are counted by truth, and the count is raised from 1 one cell at a
time while the negative calls on exactly that many cells clear at least one malignant field
and clear no more benign fields than malignant ones. A benign field it holds back is shown
"uncertain" (sent for more fields or a human read), never positive; a malignant field cleared
on more cells is left to the model and the band. Never fitted on test.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edge.analysis.labels import BENIGN
from edge.evaluation.dataset import Sample
from edge.evaluation.robustness import CONDITIONS, condition_frame
from edge.model.bundle import Bundle
from edge.pipeline import Pipeline

#: The highest count the fit may reach: past it a field's many cells are the model's to read.
MAX_MIN_CELLS = 10


@dataclass(frozen=True)
class NegativesByCount:
    """Negative field calls (without a count rule) by the number of recognised cells they
    rest on: how many were malignant fields (missed) and how many benign (rightly cleared)."""

    malignant: dict[int, int]
    benign: dict[int, int]
    fields: int  # field-conditions run

    def to_dict(self) -> dict[str, Any]:
        counts = sorted(set(self.malignant) | set(self.benign))
        return {"fields": self.fields,
                "negative_calls_by_cells": [{"cells": k, "malignant": self.malignant.get(k, 0),
                                             "benign": self.benign.get(k, 0)} for k in counts]}


def fit_min_cells(negatives: NegativesByCount, most: int = MAX_MIN_CELLS) -> int:
    """The count rule: raised from 1 while the negative calls on exactly that many cells clear
    a malignant field and no more benign fields than malignant ones (module docstring)."""
    count = 1
    while count < most:
        missed, cleared = negatives.malignant.get(count, 0), negatives.benign.get(count, 0)
        if missed == 0 or cleared > missed:
            break
        count += 1
    return count


def negatives_by_count(bundle: Bundle, samples: list[Sample], conditions: list[str] | None = None,
                       seed: int = 0, log: Callable[[str], None] = print) -> NegativesByCount:
    """Run ``samples`` under each of ``conditions`` (every capture condition unless named; as
    ``blastscope-edge robustness`` runs them, same seeds) through the device pipeline with
    ``bundle``'s calibration and no count rule, and count the negative calls by the recognised
    cells they rest on."""
    if bundle.kind != "cells":
        raise ValueError(f"bundle {bundle.model_id} is a {bundle.kind} bundle: a cell count is a cell model's")
    free = dataclasses.replace(bundle, calibration=dataclasses.replace(bundle.calibration, min_cells_to_clear=1))
    pipeline = Pipeline.on_cpu(free)
    malignant: Counter[int] = Counter()
    benign: Counter[int] = Counter()
    fields = 0
    for name in conditions or list(CONDITIONS):
        for i, sample in enumerate(samples):
            result = pipeline.process(condition_frame(name, sample, i, seed), source=f"cell-count:{name}")
            fields += 1
            if result.screening is None or result.screening.call != "negative" or result.white_cells is None:
                continue
            (benign if sample.label == BENIGN else malignant)[result.white_cells] += 1
        log(f"{name}: negative calls so far {sum(malignant.values())} malignant, {sum(benign.values())} benign")
    return NegativesByCount(dict(malignant), dict(benign), fields)


def table(negatives: NegativesByCount, chosen: int) -> str:
    """The fit's evidence, one row per count, as the command prints it."""
    rows = ["| recognised cells | malignant fields called negative | benign fields called negative | rule |",
            "|---|---|---|---|"]
    for row in negatives.to_dict()["negative_calls_by_cells"]:
        rule = "held back: uncertain" if row["cells"] < chosen else "negative"
        rows.append(f"| {row['cells']} | {row['malignant']} | {row['benign']} | {rule} |")
    return "\n".join(rows)


def fit_cell_count(bundle: Bundle, data: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The manifest updates of ``blastscope-convert fit-cell-count``: the count fitted on the
    validation split (its evidence recorded in ``calibration_fit``), then everything ``refit``
    measures, with the count in force."""
    from converter.refit import refit
    from edge.evaluation.dataset import load_dataset
    from edge.evaluation.evaluate import samples_for_split

    samples = samples_for_split(bundle, load_dataset(data), "val")
    log(f"{len(samples)} validation fields under every capture condition through the device pipeline")
    negatives = negatives_by_count(bundle, samples, log=log)
    count = fit_min_cells(negatives)
    log("\n" + table(negatives, count))
    updates = refit(bundle, data, log, min_cells=count)
    updates["calibration_fit"]["min_cells_to_clear"] = {
        "fitted_on": "validation split under every capture condition, int8 on the device pipeline, no count rule",
        "rule": "raised from 1 while the negative calls on exactly that many cells clear a malignant field and "
                "no more benign fields than malignant ones (converter.cell_count)",
        "chosen": count, **negatives.to_dict()}
    return updates
