"""The cell model's whole build: cells -> train -> int8 -> out-of-distribution check ->
appearance check -> calibration with an uncertain band -> gate -> case rule -> evaluation, capture conditions and
shortcut tests -> bundle.

Everything after training runs the device pipeline (``edge.pipeline``) on the int8 model, so
what the manifest says is what the device does. Validation fits the out-of-distribution
limit, the calibration, the gate and the case rule; it never chooses the weights (the
schedule is fixed, ``converter.cell_train``). Test is only reported.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from edge.analysis.cells import CellCrops, CellParams, model_inputs
from edge.analysis.labels import LABELS
from edge.analysis.screening import Calibration
from edge.analysis.segmentation import SegmentationParams
from edge.evaluation.dataset import Sample, load_dataset
from edge.evaluation.evaluate import classify_samples, evaluation_report
from edge.evaluation.metrics import summarize
from edge.evaluation.robustness import BENIGN_CONDITIONS
from edge.model import ood
from edge.model.bundle import CPU_MODEL, Bundle
from edge.model.inference import BackendManager
from edge.pipeline import Pipeline

from converter.appearance import fit_check as fit_appearance_check
from converter.ood_fit import embeddings as _embeddings, fit_ood_limit
from converter.suites import foreign_report, test_suites
from converter.build import _tool_versions, edgetpu_files, io_record
from converter.bundle import write_bundle
from converter.calibration import fit_calibration
from converter.cell_data import CellSet, extract
from converter.cell_model import build_cell_model
from converter.cell_train import CellTrainConfig, augment_cell, train_cells
from converter.gate import clean_figures, fit_gate
from converter.quantize import quantize_cells
from converter.refit import case_figures, fit_case_rule
from converter.split import SplitConfig, select, split_record, split_samples


@dataclass(frozen=True)
class CellBuildConfig:
    data: Path
    out: Path
    weights: str = "imagenet"
    work: Path | None = None  # cell crops and the trained Keras model; reused when present
    #: A trained Keras cell model to go on training from (instead of the ImageNet weights).
    init_model: Path | None = None
    train: CellTrainConfig = field(default_factory=CellTrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    cells: CellParams = field(default_factory=CellParams)
    representative_size: int = 400
    command: str = "blastscope-convert build-cells"


def _cells(cfg: CellBuildConfig, parts: dict[str, list[Sample]], log: Callable[[str], None]) -> dict[str, CellSet]:
    out = {}
    for name, samples in parts.items():
        cache = cfg.work / f"cells_{name}.npz" if cfg.work else None
        if cache is not None and cache.exists():
            out[name] = CellSet.load(cache)
            log(f"reusing {cache}: {len(out[name].field)} cells")
            continue
        out[name] = extract(samples, cfg.segmentation, cfg.cells, log)
        log(f"{name}: {len(out[name].field)} cells from {len(samples)} fields, {len(out[name].refused)} refused")
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            out[name].save(cache)
    return out


def representative_cells(cells: CellSet, size: int, seed: int, n_classes: int = len(LABELS)) -> dict[str, np.ndarray]:
    """The int8 calibration set: the same number of training cells per class, every other one
    stain-jittered as in training."""
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(n_classes):
        members = np.flatnonzero(cells.labels == k)
        chosen.extend(rng.choice(members, size=min(size // n_classes, len(members)), replace=False).tolist())
    parts = [augment_cell(cells.rgb[i], cells.own[i], cells.near[i], rng) if n % 2 else
             (cells.rgb[i], cells.own[i], cells.near[i]) for n, i in enumerate(sorted(chosen))]
    first, second = model_inputs(CellCrops(*(np.stack([p[j] for p in parts]) for j in range(3))))
    return {"cell": first.astype(np.float32), "cell_masked": second.astype(np.float32)}


def build_cells(cfg: CellBuildConfig, log: Callable[[str], None] = print) -> Path:
    started = time.monotonic()
    dataset = load_dataset(cfg.data)
    split = split_samples(dataset.samples, cfg.split)
    parts = {name: select(dataset.samples, keys) for name, keys in split.items()}
    log(f"{len(dataset.samples)} fields; split " + ", ".join(f"{k}={len(v)}" for k, v in parts.items()))
    cells = _cells(cfg, parts, log)
    ruler = float(np.nanmedian(cells["train"].rbc_px))
    log(f"training scale: median ruler {ruler:.2f} px (cells cut with model_ruler_px {cfg.cells.model_ruler_px})")
    if abs(ruler / cfg.cells.model_ruler_px - 1) > 0.05:
        raise ValueError(f"the training fields' ruler is {ruler:.2f} px, the cell parameters say "
                         f"{cfg.cells.model_ruler_px}: set CellParams.model_ruler_px and rebuild the cell crops")

    trained = cfg.work / "cell_model.keras" if cfg.work else None
    history_path = cfg.work / "cell_training.json" if cfg.work else None
    if trained is not None and trained.exists():
        log(f"reusing trained model {trained}")
        model = keras.models.load_model(trained)
        history = json.loads(history_path.read_text()) if history_path and history_path.exists() else {}
    else:
        if cfg.init_model is not None:
            log(f"training on from {cfg.init_model}")
            model = keras.models.load_model(cfg.init_model)
        else:
            model = build_cell_model(cfg.weights, side=cfg.cells.crop_px)
        history = train_cells(model, cells["train"], cells["val"], cfg.train, log)
        if cfg.init_model is not None:
            history["init_model"] = str(cfg.init_model)
        if trained is not None and history_path is not None:
            model.save(trained)
            history_path.write_text(json.dumps(history, indent=2))

    return finish_cell_bundle(cfg, model, cells, parts, split, dataset, history, ruler, started, log)


def finish_cell_bundle(cfg: CellBuildConfig, model: keras.Model, cells: dict[str, CellSet],
                       parts: dict[str, list[Sample]], split: dict, dataset, history: dict, ruler: float,
                       started: float, log: Callable[[str], None], cell_labels: tuple[str, ...] = LABELS,
                       fit_cells: CellSet | None = None, extra: dict | None = None) -> Path:
    """Everything after training, shared by the 4-class build and the differential's
    (``converter.differential_build``): int8, the out-of-distribution checks, calibration, gate,
    case rule, every figure and the bundle. ``fit_cells`` (default: the training split's cells)
    are the cells the int8 calibration set and both out-of-distribution checks are fitted on:
    the differential's come from both sites, so a normal cell of either is familiar.
    ``extra`` goes into the manifest as it is."""
    fit_cells = fit_cells if fit_cells is not None else cells["train"]
    representative = representative_cells(fit_cells, cfg.representative_size, cfg.split.seed, len(cell_labels))
    log(f"quantizing with {len(representative['cell'])} representative training cells")
    tflite = quantize_cells(model, representative)

    with tempfile.TemporaryDirectory() as tmp:
        cpu_model = Path(tmp) / CPU_MODEL
        cpu_model.write_bytes(tflite)
        backends = BackendManager(cpu_model, None, mode="cpu")
        embeddings = _embeddings(backends.cpu, fit_cells, every=3)
        mean, precision = ood.fit(embeddings)
        check = ood.OodCheck(mean, precision, float("inf"))
        base = {"model_id": "provisional", "kind": "cells", "cells": cfg.cells.to_dict(), "field_side": 224,
                **({"cell_labels": list(cell_labels)} if cell_labels != LABELS else {})}
        provisional = Bundle(Path(tmp), {**base, "ood": check.to_dict()}, cfg.segmentation, Calibration())
        limit, ood_report = fit_ood_limit(Pipeline(provisional, backends), parts["val"], check, every=4, log=log)
        check = dataclasses.replace(check, limit=limit)
        ood_report["training_cells"] = int(len(embeddings))
        log(f"ood limit {limit:.2f}")
        provisional = Bundle(Path(tmp), {**base, "ood": check.to_dict()}, cfg.segmentation, Calibration())
        looks, looks_report = fit_appearance_check(Pipeline(provisional, backends), fit_cells, parts["val"],
                                                   every=2, conditions=BENIGN_CONDITIONS, log=log)
        log(f"appearance limit {looks.limit:.2f}")
        base["ood_appearance"] = looks.to_dict()
        provisional = Bundle(Path(tmp), {**base, "ood": check.to_dict()}, cfg.segmentation, Calibration())
        looks_report["foreign_val"] = require_foreign_refused(Pipeline(provisional, backends), parts["val"][::4], log)

        val_raw = classify_samples(Pipeline(provisional, backends), parts["val"]).raws
        val_labels = np.array([LABELS.index(s.label) for s in parts["val"]])
        usable = [i for i, r in enumerate(val_raw) if r is not None]
        fit = fit_calibration(np.stack([r for r in val_raw if r is not None]), val_labels[usable], target_specificity=0.95,
                              band="bootstrap")
        calibration = fit.calibration
        log(f"calibration {calibration}; bootstrap {fit.report}")

        gate = fit_gate(Pipeline(dataclasses.replace(provisional, calibration=calibration), backends), parts["val"],
                        clean_figures(parts["train"] + parts["val"]), log=log)
        gated = dataclasses.replace(provisional, calibration=calibration,
                                    manifest={**provisional.manifest, "quality_gate": gate})
        pipeline = Pipeline(gated, backends)
        val_read = classify_samples(pipeline, parts["val"])
        test_read = classify_samples(pipeline, parts["test"])
        case_rule = fit_case_rule(pipeline.bundle, parts["val"], val_read, "validation split, int8 on the device pipeline")
        log(f"case rule {case_rule.to_dict()}")
        pipeline = Pipeline(dataclasses.replace(gated, manifest={
            **gated.manifest, "case_rule": case_rule.to_dict(), "split": {"block_size": cfg.split.block_size}}), backends)
        metrics: dict[str, Any] = {
            "int8_val": summarize([s.label for s in parts["val"]], val_read.raws, calibration, val_read.cells),
            "int8_test": evaluation_report(pipeline, parts["test"], test_read),
            "cases_test": case_figures(pipeline.bundle, parts["test"], test_read),
        }
        for name in ("int8_val", "int8_test"):
            m = metrics[name]
            log(f"{name}: accuracy={m['accuracy']:.4f} sensitivity={m['malignant_sensitivity']} "
                f"specificity={m['benign_specificity']} uncertain={m['uncertain']}")
        suites = test_suites(pipeline, parts["test"], parts["train"], log)

        check_report, compiled, files = edgetpu_files(cpu_model, Path(tmp), log)
        backend = backends.cpu
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": cfg.command,
            **{k: v for k, v in base.items() if k != "model_id"},  # the id is the written manifest's hash
            **io_record(backend),
            "segmentation": cfg.segmentation.to_dict(),
            "calibration": calibration.to_dict(),
            "calibration_fit": {"int8": fit.report},
            "ood": check.to_dict(),
            "ood_fit": ood_report,
            "ood_appearance_fit": looks_report,
            "quality_gate": gate,
            "case_rule": case_rule.to_dict(),
            "split": split_record(split, cfg.split),
            "metrics": metrics,
            **suites,
            "cell_data": {name: {"fields": len(c.keys), "cells": int(len(c.field)), "refused": len(c.refused),
                                 "refused_reasons": _count(r for _, r in c.refused)} for name, c in cells.items()},
            "training": {"weights": str(cfg.weights), "history": history,
                         "representative_cells": int(len(representative["cell"])),
                         "measured_ruler_px": round(ruler, 3), "seconds": round(time.monotonic() - started, 1)},
            "edgetpu_check": check_report.to_dict(),
            "edgetpu": compiled.to_dict(),
            "tools": _tool_versions(),
            "dataset": {"root": str(cfg.data), "counts": dataset.counts()},
            "training_config": asdict(cfg.train),
            "platform": f"{platform.system()} {platform.machine()} python {sys.version.split()[0]}",
            **(extra or {}),
        }
        return write_bundle(cfg.out, files, manifest)


#: The least share of foreign-looking validation fields the out-of-distribution checks must
#: refuse for a build to go on. The shipped 4-class model refuses 91% of the test split's;
#: the first differential build refused none (its appearance limit had been fitted on a
#: sentinel row) and nothing stopped it.
MIN_FOREIGN_REFUSED = 0.5


def require_foreign_refused(pipeline: Pipeline, samples: list[Sample], log: Callable[[str], None]) -> dict:
    """The foreign-looking suite (``converter.suites.foreign_report``) on ``samples``; raises
    when fewer than ``MIN_FOREIGN_REFUSED`` of them are refused as out of distribution."""
    report = foreign_report(pipeline, samples)
    share = report["refused_out_of_distribution"] / max(1, report["fields"])
    log(f"foreign-looking validation fields refused: {report['refused_out_of_distribution']} of {report['fields']}")
    if share < MIN_FOREIGN_REFUSED:
        raise ValueError(f"the out-of-distribution checks refuse {report['refused_out_of_distribution']} of "
                         f"{report['fields']} foreign-looking validation fields (at least {MIN_FOREIGN_REFUSED:.0%} "
                         f"needed): the build stops here rather than ship a check that passes foreign smears")
    return report


def _count(reasons) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        key = r.split(":")[0]
        out[key] = out.get(key, 0) + 1
    return out
