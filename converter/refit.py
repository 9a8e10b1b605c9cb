"""Re-measure a bundle's model as the device runs it, without retraining: the calibration
(temperature, threshold and uncertain band) fitted again on the validation split, int8 metrics
on the validation and test splits (scoring the label the device shows), the case rule fitted on
validation fields, case figures on test, and the test split's suites (``converter.suites``).
Used when the way results are computed, scored or called changes (or, with ``views``, how
many orientations each cell is read in); the model file is untouched, the manifest is
rewritten (so the model id changes) and the bundle is signed again when a key is given.

The calibration is refitted because it is fitted on the probabilities the device computes:
when the pipeline's numbers move (a faster resize, a coarser shading estimate), a validation
field near the band's edge can cross it, and the recorded validation figures would no longer
be what ``blastscope-edge evaluate`` prints. It is fitted as at build: same targets and band
kind (read from the manifest's ``calibration_fit``), on validation fields run without the
quality gate (the gate is kept as it was).

The float model is not kept in a bundle, so float metrics recorded at build time stay as
they were and say how they were scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edge.model.bundle import Bundle
from edge.analysis.case import CaseRule
from edge.evaluation.dataset import load_dataset
from edge.evaluation.evaluate import (Readings, case_report, classify_samples, evaluation_report, field_records,
                                      samples_for_split)
from edge.analysis.labels import BENIGN, LABELS
from edge.analysis.screening import Calibration
from edge.pipeline import Pipeline

CASE_SIZES = (1, 3, 5, 10)


def fit_case_rule(bundle: Bundle, samples: list, readings: Readings, fitted_on: str) -> CaseRule:
    records = field_records(bundle, readings)
    return CaseRule.fit([r["call"] for r, s in zip(records, samples) if s.label == BENIGN],
                        [r["call"] for r, s in zip(records, samples) if s.label != BENIGN], fitted_on)


def case_figures(bundle: Bundle, samples: list, readings: Readings) -> list[dict[str, Any]]:
    out = []
    for k in CASE_SIZES:
        report = case_report(bundle, samples, readings, k)
        report.pop("rule")
        out.append(report)
    return out


def refit_calibration(bundle: Bundle, val: list, log: Callable[[str], None] = print) -> tuple[Calibration, dict[str, Any]]:
    """The calibration fitted again on ``val`` as the build fitted it: the targets and band kind
    recorded in the manifest, the fields run without the quality gate or case rule."""
    import dataclasses

    import numpy as np

    from converter.calibration import fit_calibration

    recorded = bundle.manifest.get("calibration_fit", {}).get("int8", {})
    targets = recorded.get("targets", {})
    ungated = dataclasses.replace(bundle, calibration=Calibration(), manifest={
        k: v for k, v in bundle.manifest.items() if k not in ("quality_gate", "case_rule")})
    raws = classify_samples(Pipeline.on_cpu(ungated), val).raws
    usable = [i for i, r in enumerate(raws) if r is not None]
    present = [r for r in raws if r is not None]
    truth = np.array([LABELS.index(val[i].label) for i in usable])
    fit = fit_calibration(np.stack(present), truth,
                          target_sensitivity=float(targets.get("sensitivity", 0.995)),
                          target_specificity=float(targets.get("specificity", 0.97)),
                          band=str(recorded.get("band", "targets")))
    # the count rule is fitted apart (converter.cell_count) and kept: the thresholds do not move it
    calibration = dataclasses.replace(fit.calibration, min_cells_to_clear=bundle.calibration.min_cells_to_clear)
    log(f"calibration refitted on {len(usable)} validation fields: {calibration} (was {bundle.calibration})")
    return calibration, fit.report


def with_cells(bundle: Bundle, **changes: Any) -> Bundle:
    """``bundle`` with its cell parameters changed (``views``: each cell read in that many
    orientations, ``edge.model.views``; ``partition``: how touching cells are cut apart,
    ``edge.analysis.cells.detect_cells``); its calibration must then be fitted again, which
    ``refit`` does."""
    import dataclasses

    if bundle.kind != "cells" or bundle.cells is None:
        raise ValueError(f"bundle {bundle.model_id} is a {bundle.kind} bundle: {', '.join(changes)} are a cell model's")
    params = dataclasses.replace(bundle.cells, **changes)  # checks the values
    return dataclasses.replace(bundle, manifest={**bundle.manifest, "cells": params.to_dict()})


def with_resplit(bundle: Bundle, resplit: bool) -> Bundle:
    """``bundle`` segmenting with ``SegmentationParams.resplit`` on or off: a field whose a*
    centres are close is split a second time to find its few white cells, instead of being
    refused as faintly stained. Its calibration must then be fitted again, which ``refit`` does."""
    import dataclasses

    params = dataclasses.replace(bundle.segmentation, resplit=resplit)
    return dataclasses.replace(bundle, segmentation=params, manifest={**bundle.manifest, "segmentation": params.to_dict()})


def refit(bundle: Bundle, data: Path, log: Callable[[str], None] = print, views: int | None = None,
          resplit: bool | None = None, min_cells: int | None = None, partition: str | None = None,
          out_of_fold: Path | None = None) -> dict[str, Any]:
    """The manifest updates: the calibration, re-measured int8 metrics, the case rule and the
    case figures, and the test split's suites (capture conditions, shortcuts, foreign-looking
    fields) measured again with them. With ``views``, each cell is read in that many
    orientations from now on (the manifest's ``cells`` is updated); with ``resplit``, the
    segmentation's second split is turned on or off (the manifest's ``segmentation``); with
    ``min_cells``, a negative field call needs that many recognised cells from now on
    (``Calibration.min_cells_to_clear``, fitted by ``converter.cell_count``); with
    ``partition``, touching cells are cut apart that way from now on (``CellParams.partition``)."""
    import dataclasses

    from converter.suites import test_suites

    updates: dict[str, Any] = {}
    if min_cells is not None:
        log(f"a negative field call rests on at least {min_cells} recognised cell(s) "
            f"(was {bundle.calibration.min_cells_to_clear})")
        bundle = dataclasses.replace(bundle, calibration=dataclasses.replace(bundle.calibration,
                                                                             min_cells_to_clear=min_cells))
    if views is not None:
        bundle = with_cells(bundle, views=views)
        updates["cells"] = bundle.manifest["cells"]
        log(f"cells read in {views} orientation(s)")
    if partition is not None:
        bundle = with_cells(bundle, partition=partition)
        updates["cells"] = bundle.manifest["cells"]
        log(f"touching cells cut apart by {partition}")
    if resplit is not None:
        bundle = with_resplit(bundle, resplit)
        updates["segmentation"] = bundle.manifest["segmentation"]
        log(f"second split of fields with close a* centres {'on' if resplit else 'off'}")
    dataset = load_dataset(data)
    oof_rule = None
    if out_of_fold is not None:  # issue 32 item 4: fitted on every training block, validation the check
        from converter.differential_kfold import fit_out_of_fold

        calibration, fit_report, oof_rule = fit_out_of_fold(out_of_fold, bundle)
        log(f"calibration fitted out of fold ({out_of_fold}): {calibration} (was {bundle.calibration})")
    else:
        calibration, fit_report = refit_calibration(bundle, samples_for_split(bundle, dataset, "val"), log)
    bundle = dataclasses.replace(bundle, calibration=calibration,
                                 manifest={**bundle.manifest, "calibration": calibration.to_dict()})
    pipeline = Pipeline.on_cpu(bundle)
    measured: dict[str, tuple[list, Readings]] = {}
    for split in ("val", "test"):
        samples = samples_for_split(bundle, dataset, split)
        measured[split] = (samples, classify_samples(pipeline, samples))
        log(f"{split}: {len(samples)} fields run through the device pipeline")
    rule = oof_rule or fit_case_rule(bundle, measured["val"][0], measured["val"][1],
                                     "validation split, int8 on the device pipeline")
    with_rule = dataclasses.replace(bundle, manifest={**bundle.manifest, "case_rule": rule.to_dict()})
    metrics = dict(bundle.manifest.get("metrics", {}))
    for name in ("float_val", "float_test"):
        if name in metrics and "scored" not in metrics[name]:
            metrics[name] = {**metrics[name], "scored": "argmax of the calibrated probabilities (recorded at build; "
                                                        "the float model is not kept to re-score it)"}
    samples, readings = measured["val"]
    metrics["int8_val"] = evaluation_report(Pipeline.on_cpu(with_rule), samples, readings)
    samples, readings = measured["test"]
    metrics["int8_test"] = evaluation_report(Pipeline.on_cpu(with_rule), samples, readings)
    metrics["cases_test"] = case_figures(with_rule, samples, readings)
    log(f"case rule: {rule.to_dict()}")
    for c in metrics["cases_test"]:
        log(f"cases of {c['size']}: sensitivity {c['sensitivity']} specificity {c['specificity']} "
            f"({c['n_malignant']} malignant, {c['n_benign']} benign, {c['uncertain']} uncertain or pending)")
    calibration_fit = {**bundle.manifest.get("calibration_fit", {}), "int8": fit_report}
    suites = test_suites(Pipeline.on_cpu(with_rule), samples, samples_for_split(bundle, dataset, "train"), log)
    return {**updates, "calibration": calibration.to_dict(), "calibration_fit": calibration_fit,
            "case_rule": rule.to_dict(), "metrics": metrics, **suites}
