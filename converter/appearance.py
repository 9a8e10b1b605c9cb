"""Fit the field-level appearance check (``edge.model.ood.AppearanceCheck``) and add it to a
cell bundle.

The mean, spread and covariance come from the training cells, cut the way the device cuts
them (``converter.cell_data.extract``). The limit comes from validation: the highest median
cell distance of any validation field under any of the benign capture conditions
(``edge.evaluation.robustness.BENIGN_CONDITIONS``), so every one of those fields still passes.
A field of the training site is never refused by this check unless it looks unlike every
benign variation validation was shown; a field whose cells do not look stained the way the
training cells were is.

``add_to_bundle`` rewrites an existing bundle with the check and re-measures what the check
can change, through the device pipeline: the calibration, int8 metrics and the case rule (``converter.refit``),
the capture-condition suite, the shortcut tests and the foreign-looking fields on test.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge.analysis.appearance import UNMEASURED, features
from edge.analysis.cells import CellCrops, CellParams
from edge.analysis.imagefile import read_rgb
from edge.evaluation.dataset import Sample, load_dataset
from edge.evaluation.evaluate import samples_for_split
from edge.evaluation.robustness import BENIGN_CONDITIONS, CONDITIONS
from edge.model.bundle import Bundle
from edge.model.ood import AppearanceCheck, fit_appearance
from edge.pipeline import Pipeline

from converter.cell_data import CellSet, extract
from converter.refit import refit


def _with_check(pipeline: Pipeline, check: AppearanceCheck) -> Pipeline:
    bundle = dataclasses.replace(pipeline.bundle, manifest={**pipeline.bundle.manifest, "ood_appearance": check.to_dict()})
    return Pipeline(bundle, pipeline.backends)


def fit_check(pipeline: Pipeline, train: CellSet, val: list[Sample], every: int, conditions: tuple[str, ...],
              log: Callable[[str], None] = print) -> tuple[AppearanceCheck, dict[str, Any]]:
    """The check fitted on ``train``'s cells, its limit on every ``every``-th validation field
    under each of ``conditions``, through ``pipeline`` (the device path)."""
    params = pipeline.bundle.cells
    assert params is not None
    rows = features(CellCrops(train.rgb, train.own, train.near), params)
    check = fit_appearance(rows)
    probe = _with_check(pipeline, check)  # limit open: every field's distance is measured
    per_condition: dict[str, dict[str, float]] = {}
    for name in conditions:
        medians = []
        for i, sample in enumerate(val[::every]):
            rng = np.random.default_rng([zlib.crc32(name.encode()), i])
            result = probe.process(CONDITIONS[name](read_rgb(sample.path), rng), source="appearance-fit")
            # a field with no measurable cell is refused by the check whatever the limit: not a basis for it
            if result.appearance_distance is not None and result.appearance_distance < UNMEASURED:
                medians.append(result.appearance_distance)
        per_condition[name] = {"fields": len(medians), "max": round(max(medians, default=0.0), 3),
                               "p95": round(float(np.percentile(medians, 95)), 3) if medians else 0.0}
        log(f"appearance: {name}: {len(medians)} fields, highest median cell distance {per_condition[name]['max']:.2f}")
    limit = max(c["max"] for c in per_condition.values())
    report = {"fitted_on": f"training split cells ({len(rows)}); limit: the highest field median over validation "
                           f"(every {every}th field) under the benign capture conditions",
              "training_cells": int(len(rows)), "per_condition": per_condition}
    return dataclasses.replace(check, limit=float(limit)), report


def add_to_bundle(bundle: Bundle, data: Path, every: int = 2, log: Callable[[str], None] = print,
                  embedding: bool = False) -> dict[str, Any]:
    """The manifest updates that add the appearance check to ``bundle`` and re-measure it; with
    ``embedding``, the embedding check is fitted again first (``converter.ood_fit``), for when
    the way the device cuts cells has changed since the build."""
    from converter.ood_fit import fit_embedding_check

    if bundle.kind != "cells" or bundle.cells is None:
        raise ValueError(f"bundle {bundle.model_id} is a {bundle.kind} bundle: the appearance check reads cells")
    dataset = load_dataset(data)
    parts = {name: samples_for_split(bundle, dataset, name) for name in ("train", "val", "test")}
    params: CellParams = bundle.cells
    train = extract(parts["train"], bundle.segmentation, params, log)
    log(f"appearance: {len(train.field)} training cells from {len(parts['train'])} fields")
    refitted: dict[str, Any] = {}
    if embedding:
        check_e, report_e = fit_embedding_check(bundle, train, parts["val"], log)
        refitted = {"ood": check_e.to_dict(), "ood_fit": report_e}
        bundle = dataclasses.replace(bundle, manifest={**bundle.manifest, **refitted})
    check, report = fit_check(Pipeline.on_cpu(bundle), train, parts["val"], every, BENIGN_CONDITIONS, log)
    log(f"appearance limit {check.limit:.2f}")
    checked = dataclasses.replace(bundle, manifest={**bundle.manifest, "ood_appearance": check.to_dict(),
                                                    "ood_appearance_fit": report})
    # refit fits the calibration again and measures the metrics and the test suites with the check in force
    updates = {**refitted, "ood_appearance": check.to_dict(), "ood_appearance_fit": report,
               **refit(checked, data, log)}
    return updates
