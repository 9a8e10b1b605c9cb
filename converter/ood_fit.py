"""Fit the per-cell embedding check (``edge.model.ood.OodCheck``): the mean and shrunk
covariance of the training cells' embeddings, cut the way the device cuts them, and the limit
from validation cells under the benign capture conditions, through the device pipeline. The
build fits it once; ``fit_embedding_check`` fits it again for an existing bundle when the way
cells are cut changes (``blastscope-convert fit-checks``)."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

import numpy as np

from edge.analysis.cells import CellCrops, model_inputs
from edge.analysis.imagefile import read_rgb
from edge.evaluation.dataset import Sample
from edge.evaluation.robustness import BENIGN_CONDITIONS, CONDITIONS
from edge.model import ood
from edge.model.bundle import Bundle
from edge.pipeline import Pipeline

from converter.cell_data import CellSet

#: The percentile of validation cells' distances under each benign condition the limit sits at.
OOD_PERCENTILE = 99.5


def embeddings(backend, cells: CellSet, every: int) -> np.ndarray:
    """The upright embedding of every ``every``-th cell of ``cells``."""
    idx = np.arange(0, len(cells.field), every)
    first, second = model_inputs(CellCrops(cells.rgb[idx], cells.own[idx], cells.near[idx]))
    return np.stack([backend.infer(a, b).embedding for a, b in zip(first, second)])


def fit_ood_limit(pipeline: Pipeline, val: list[Sample], check: ood.OodCheck, every: int,
                  log: Callable[[str], None]) -> tuple[float, dict[str, Any]]:
    """The limit: ``OOD_PERCENTILE`` of the distances of validation cells under each benign
    condition, through the device pipeline (the highest over conditions)."""
    open_check = dataclasses.replace(check, limit=float("inf"))
    bundle = dataclasses.replace(pipeline.bundle, manifest={**pipeline.bundle.manifest, "ood": open_check.to_dict()})
    probe = Pipeline(bundle, pipeline.backends)
    per_condition = {}
    for name in BENIGN_CONDITIONS:
        distances: list[float] = []
        for i, sample in enumerate(val[::every]):
            rng = np.random.default_rng([zlib.crc32(name.encode()), i])
            result = probe.process(CONDITIONS[name](read_rgb(sample.path), rng), source="ood-fit")
            distances.extend(c.distance for c in result.cells or [])
        per_condition[name] = float(np.percentile(distances, OOD_PERCENTILE)) if distances else 0.0
        log(f"ood: {name}: {len(distances)} cells, p{OOD_PERCENTILE:g} distance {per_condition[name]:.2f}")
    limit = max(per_condition.values())
    return limit, {"fitted_on": f"validation split (every {every}th field) under benign capture conditions",
                   "percentile": OOD_PERCENTILE, "per_condition": {k: round(v, 3) for k, v in per_condition.items()}}


def fit_embedding_check(bundle: Bundle, train: CellSet, val: list[Sample],
                        log: Callable[[str], None] = print) -> tuple[ood.OodCheck, dict[str, Any]]:
    """The embedding check fitted as the build fits it (every 3rd training cell, the limit on
    every 4th validation field), for ``bundle``'s model and its way of cutting cells."""
    # as at the build: no quality gate and no appearance check, so every field's cells count
    bare = dataclasses.replace(bundle, manifest={k: v for k, v in bundle.manifest.items()
                                                 if k not in ("quality_gate", "ood_appearance")})
    pipeline = Pipeline.on_cpu(bare)
    found = embeddings(pipeline.backends.cpu, train, every=3)
    mean, precision = ood.fit(found)
    limit, report = fit_ood_limit(pipeline, val, ood.OodCheck(mean, precision, float("inf")), every=4, log=log)
    report["training_cells"] = int(len(found))
    log(f"embedding check: {len(found)} training cells, limit {limit:.2f}")
    return ood.OodCheck(mean, precision, limit), report
