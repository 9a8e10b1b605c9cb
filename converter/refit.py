"""Re-measure a bundle's model as the device runs it, without retraining: int8 metrics on the
validation and test splits (scoring the label the device shows), the case rule fitted on
validation fields, case figures on test. Used when the way results are scored or called
changes; the model file is untouched, the manifest is rewritten (so the model id changes)
and the bundle is signed again when a key is given.

The float model is not kept in a bundle, so float metrics recorded at build time stay as
they were and say how they were scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from edge.model.bundle import Bundle
from edge.analysis.case import CaseRule
from edge.evaluation.dataset import load_dataset
from edge.evaluation.evaluate import case_report, classify_samples, evaluation_report, field_records, samples_for_split
from edge.analysis.labels import BENIGN
from edge.pipeline import Pipeline

CASE_SIZES = (1, 3, 5, 10)


def fit_case_rule(bundle: Bundle, samples: list, raws: list, fitted_on: str) -> CaseRule:
    records = field_records(bundle, raws)
    return CaseRule.fit([r["call"] for r, s in zip(records, samples) if s.label == BENIGN],
                        [r["call"] for r, s in zip(records, samples) if s.label != BENIGN], fitted_on)


def case_figures(bundle: Bundle, samples: list, raws: list) -> list[dict[str, Any]]:
    out = []
    for k in CASE_SIZES:
        report = case_report(bundle, samples, raws, k)
        report.pop("rule")
        out.append(report)
    return out


def refit(bundle: Bundle, data: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The manifest updates: re-measured int8 metrics, the case rule and the case figures."""
    import dataclasses

    pipeline = Pipeline.on_cpu(bundle)
    dataset = load_dataset(data)
    measured: dict[str, tuple[list, list, list]] = {}
    for split in ("val", "test"):
        samples = samples_for_split(bundle, dataset, split)
        raws, ms = classify_samples(pipeline, samples)
        measured[split] = (samples, raws, ms)
        log(f"{split}: {len(samples)} fields run through the device pipeline")
    rule = fit_case_rule(bundle, measured["val"][0], measured["val"][1], "validation split, int8 on the device pipeline")
    with_rule = dataclasses.replace(bundle, manifest={**bundle.manifest, "case_rule": rule.to_dict()})
    metrics = dict(bundle.manifest.get("metrics", {}))
    for name in ("float_val", "float_test"):
        if name in metrics and "scored" not in metrics[name]:
            metrics[name] = {**metrics[name], "scored": "argmax of the calibrated probabilities (recorded at build; "
                                                        "the float model is not kept to re-score it)"}
    samples, raws, ms = measured["val"]
    metrics["int8_val"] = evaluation_report(Pipeline.on_cpu(with_rule), samples, raws, ms)
    samples, raws, ms = measured["test"]
    metrics["int8_test"] = evaluation_report(Pipeline.on_cpu(with_rule), samples, raws, ms)
    metrics["cases_test"] = case_figures(with_rule, samples, raws)
    log(f"case rule: {rule.to_dict()}")
    for c in metrics["cases_test"]:
        log(f"cases of {c['size']}: sensitivity {c['sensitivity']} specificity {c['specificity']} "
            f"({c['n_malignant']} malignant, {c['n_benign']} benign, {c['uncertain']} uncertain or pending)")
    return {"case_rule": rule.to_dict(), "metrics": metrics}
