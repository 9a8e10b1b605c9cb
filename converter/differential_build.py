"""The differential bundle (issue 32): the trained 11-output cell model through the same
int8, fitting and measuring path as the 4-class cell model (``converter.cell_build``).

What differs: the manifest names the model's outputs (``cell_labels``), the int8 calibration
set and both out-of-distribution checks are fitted on the cells of both sites (so a normal
cell of pbc-normal is as familiar as one of all-pbs-224), and the manifest carries the
differential's per-site, per-class figures on validation and test cells
(``differential_cells``). The field's call is still fitted on all-pbs-224 validation fields
through the device pipeline: the pooled cells read as the four labels
(``edge.analysis.cells.four_class``), with every cell the model reads as "not a white cell"
left out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from edge.analysis.cells import CellCrops, model_inputs
from edge.evaluation.dataset import load_dataset
from edge.model.bundle import default_bundle_path, load_bundle

from converter.cell_build import CellBuildConfig, finish_cell_bundle
from converter.cell_data import CellSet
from converter.cell_train import CellTrainConfig
from converter.differential_data import DIFF_LABELS, merge
from converter.differential_train import cell_params, cell_sets, site_report
from converter.split import SplitConfig, select, split_samples


def cell_figures(model: keras.Model, sets: dict[str, dict[str, CellSet]], splits: tuple[str, ...] = ("val", "test")
                 ) -> dict[str, Any]:
    """Per-site, per-class figures of the float model's cells (``site_report``); pbc-normal is
    split by image (no patient identifiers), all-pbs-224 cells carry their field's label."""
    classifier = keras.Model(model.inputs, model.outputs[0])
    out: dict[str, Any] = {}
    for split in splits:
        for site, by_split in sets.items():
            cells = by_split[split]
            probs = classifier.predict(model_inputs(CellCrops(cells.rgb, cells.own, cells.near)), batch_size=64, verbose=0)
            out[f"{site}_{split}"] = site_report(probs, cells)
    return out


def build_differential(data: Path, pbc: Path, work: Path, out: Path, weights: str,
                       log: Callable[[str], None] = print) -> Path:
    started = time.monotonic()
    model = keras.models.load_model(work / "differential.keras")
    history = json.loads((work / "differential_training.json").read_text())
    # cut the cells the way the training did (its record), so the bundle's device reads them so too
    partition = history.get("history", {}).get("partition")
    params = cell_params(partition)
    sets = cell_sets(data, pbc, work, log, partition)
    dataset = load_dataset(data)
    split_cfg = SplitConfig()
    split = split_samples(dataset.samples, split_cfg)
    shipped_bundle = load_bundle(default_bundle_path())
    shipped = shipped_bundle.manifest["split"]["keys"]
    if {k: sorted(v) for k, v in split.items()} != {k: sorted(shipped[k]) for k in split}:
        raise ValueError("the default split differs from the shipped bundle's: the cell caches would not match it")
    parts = {name: select(dataset.samples, keys) for name, keys in split.items()}
    cells = sets["allpbs"]
    ruler = float(np.nanmedian(cells["train"].rbc_px))
    assert shipped_bundle.cells is not None
    cfg = CellBuildConfig(data=data, out=out, weights=weights, work=work,
                          train=CellTrainConfig(**history["config"]), split=split_cfg,
                          segmentation=shipped_bundle.segmentation, cells=params,
                          command="blastscope-convert build-differential")
    log("cell figures of the differential (float model)")
    figures = cell_figures(model, sets)
    for name, report in figures.items():
        log(f"{name}: {json.dumps({k: v for k, v in report.items() if k != 'confusion'})}")
    extra = {"differential_cells": figures,
             "differential_data": {
                 "labels": list(DIFF_LABELS),
                 "sites": {"all-pbs-224": "Taleqani Hospital, labelled per field (weak labels: each cell takes its "
                                          "field's class; benign fields' cells are benign lymphoid)",
                           "pbc-normal": "Hospital Clinic of Barcelona, CellaVision DM96, labelled per cell; split by "
                                         "image (no patient identifiers: near-duplicates of one donor may straddle "
                                         "the split); degraded to 2.27 px/um and JPEG-compressed before cutting"},
                 "cells": {f"{site}_{split}": int(len(c.field)) for site, by in sets.items() for split, c in by.items()},
                 "limits": ["no blasts from a second site: every blast is Taleqani's",
                            "benign lymphoid cells of Taleqani are hematogones from few patients",
                            "the non-blast cells of malignant fields are labelled blasts (weak labels)"]},
             "training_seconds": history.get("history", {}).get("seconds")}
    return finish_cell_bundle(cfg, model, cells, parts, split, dataset, history, ruler, started, log,
                              cell_labels=DIFF_LABELS, fit_cells=merge(cells["train"], sets["pbc"]["train"]),
                              extra=extra)

