"""Fit the quality gate's limits for one model, from evidence on the validation split.

A limit is worth having only where the model stops reading fields correctly, so each is set
from a ladder of growing degradation (``edge.evaluation.degradation``), run through the device pipeline
with that one check switched off:
- **focus**: defocus sigma 0 to 4 px. The *failing level* is the first sigma at which accuracy
  over classified fields falls more than 2 points below clean or malignant sensitivity drops
  below 99%. ``min_focus`` is the sharpness that rejects 95% of fields of every class at the
  failing level, kept below every clean field's sharpness (times 0.8) so no clean field is
  rejected.
- **noise**, **overexposure** and **field stop in view**: the limit sits just above every
  clean training and validation field (noise x1.08, saturated fraction +0.05, dark-surround
  fraction +0.01), so a clean field is never rejected; the ladders (Gaussian noise sigma 0 to 10, exposure x1 to x1.4) are recorded to
  show what the model does beyond it.
- **too dark** stays at a fixed grey level of 40: darker fields cannot be brought to the
  background level by normalisation's largest gain.
Per level the record keeps accuracy, malignant sensitivity, and the share of each class the
fitted limit rejects, which is how the gate is checked not to depend on the class.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

import numpy as np

from edge.analysis.quality import QualityConfig
from edge.evaluation.dataset import Sample
from edge.analysis.imagefile import read_rgb
from edge.evaluation.degradation import blur, gain, gaussian_noise
from edge.analysis.labels import BENIGN, LABELS
from edge.pipeline import Pipeline
from edge.analysis.preprocess import fit_to_input
from edge.analysis.quality import GateLimits, measure_quality

BLUR_LADDER = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
NOISE_LADDER = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0)
EXPOSURE_LADDER = (1.0, 1.1, 1.2, 1.3, 1.4)
ACCURACY_DROP = 0.02
MIN_SENSITIVITY = 0.99
NOISE_MARGIN, CLIPPED_MARGIN, BORDER_MARGIN, CLEAN_FOCUS_MARGIN = 1.08, 0.05, 0.01, 0.8
MIN_BRIGHTNESS = 40.0


def _level(pipeline: Pipeline, samples: list[Sample], degrade: Callable[[np.ndarray, np.random.Generator], np.ndarray],
           figure: str, seed: int) -> dict[str, Any]:
    """One rung of a ladder: the device's answers and the gate figure per field."""
    values, labels, shown, calls = [], [], [], []
    for i, sample in enumerate(samples):
        rng = np.random.default_rng([seed, i])
        result = pipeline.process(degrade(read_rgb(sample.path), rng))
        values.append(getattr(result.quality, figure))
        labels.append(sample.label)
        shown.append(result.screening.label if result.screening is not None else None)
        calls.append(result.screening.call if result.screening is not None else None)
    return {"values": np.array(values), "labels": labels, "shown": shown, "calls": calls}


def _scores(level: dict[str, Any]) -> dict[str, float | None]:
    classified = [i for i, s in enumerate(level["shown"]) if s is not None]
    malignant = [i for i in classified if level["labels"][i] != BENIGN]
    return {
        "accuracy": round(float(np.mean([level["shown"][i] == level["labels"][i] for i in classified])), 4)
        if classified else None,
        "malignant_sensitivity": round(float(np.mean([level["calls"][i] == "positive" for i in malignant])), 4)
        if malignant else None,
        "malignant_called_negative": sum(level["calls"][i] == "negative" for i in malignant),
    }


Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _blurred(sigma: float) -> Degrade:
    return lambda f, r: blur(f, sigma) if sigma else f


def _noisy(sigma: float) -> Degrade:
    return lambda f, r: gaussian_noise(f, r, sigma) if sigma else f


def _brighter(factor: float) -> Degrade:
    return lambda f, r: gain(f, factor, factor, factor)


def _rejected_by_class(level: dict[str, Any], reject: Callable[[np.ndarray], np.ndarray]) -> dict[str, float | None]:
    out = {}
    for label in LABELS:
        members = np.array([lab == label for lab in level["labels"]])
        out[label] = round(float(reject(level["values"][members]).mean()), 4) if members.any() else None
    return out


def clean_figures(samples: list[Sample]) -> dict[str, float]:
    """Extremes of the gate figures over clean fields (training and validation)."""
    limits = GateLimits()
    q = [measure_quality(fit_to_input(read_rgb(s.path), 224), limits) for s in samples]
    return {"max_noise": max(x.noise for x in q), "max_clipped": max(x.clipped_fraction for x in q),
            "max_border": max(x.border for x in q), "min_focus": min(x.focus for x in q), "n": len(q)}


def fit_gate(pipeline: Pipeline, val: list[Sample], clean: dict[str, float], seed: int = 0,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """The ``quality_gate`` manifest entry: fitted limits and the ladders they come from."""
    limits = {
        "max_noise": round(clean["max_noise"] * NOISE_MARGIN, 2),
        "max_clipped": round(min(1.0, clean["max_clipped"] + CLIPPED_MARGIN), 3),
        "max_border": round(clean["max_border"] + BORDER_MARGIN, 4),
        "min_brightness": MIN_BRIGHTNESS,
    }
    base = dataclasses.replace(pipeline.bundle, manifest={**pipeline.bundle.manifest, "quality_gate": {}})

    def open_gate(**off: float) -> Pipeline:
        return Pipeline(base, pipeline.backends, QualityConfig(**{**limits, "min_focus": 0.0, **off}))

    ladders: dict[str, list[dict[str, Any]]] = {"defocus sigma": [], "noise sigma": [], "exposure": []}
    focus_runs = []
    for sigma in BLUR_LADDER:
        level = _level(open_gate(), val, _blurred(sigma), "focus", seed + zlib.crc32(b"blur"))
        focus_runs.append((sigma, level))
        log(f"gate: defocus sigma {sigma}: {_scores(level)}")
    clean_scores = _scores(focus_runs[0][1])
    # a level fails where the model reads blurred fields worse than clean ones: accuracy more
    # than ACCURACY_DROP below clean, or sensitivity below MIN_SENSITIVITY (or, for a model
    # whose clean sensitivity is already below it, more than one point below clean)
    floor = min(MIN_SENSITIVITY, (clean_scores["malignant_sensitivity"] or 0) - 0.01)
    failing = next((sigma for sigma, level in focus_runs[1:]
                    if (s := _scores(level))["accuracy"] is None
                    or s["accuracy"] < (clean_scores["accuracy"] or 0.0) - ACCURACY_DROP
                    or (s["malignant_sensitivity"] or 0) < floor), None)
    ceiling = round(clean["min_focus"] * CLEAN_FOCUS_MARGIN, 2)
    if failing is None:
        min_focus, why = round(float(np.percentile(focus_runs[-1][1]["values"], 95)), 2), "no level failed"
    else:
        at_failing = dict(focus_runs)[failing]
        per_class = [np.percentile(at_failing["values"][[lab == label for lab in at_failing["labels"]]], 95)
                     for label in LABELS]
        min_focus, why = round(float(max(per_class)), 2), f"rejects 95% of every class at sigma {failing}"
    if min_focus > ceiling:
        min_focus, why = ceiling, why + f"; capped at 0.8 x the sharpest-needed clean field ({ceiling})"
    limits["min_focus"] = min_focus
    log(f"gate: min_focus {min_focus} ({why})")
    for sigma, level in focus_runs:
        ladders["defocus sigma"].append({"level": sigma, **_scores(level),
                                         "sharpness_p5_p50_p95": [round(float(v), 2) for v in
                                                                  np.percentile(level["values"], [5, 50, 95])],
                                         "rejected_by_class": _rejected_by_class(level, lambda v: v < min_focus)})
    for sigma in NOISE_LADDER:
        level = _level(open_gate(max_noise=1e9), val, _noisy(sigma), "noise", seed + zlib.crc32(b"noise"))
        ladders["noise sigma"].append({"level": sigma, **_scores(level),
                                       "rejected_by_class": _rejected_by_class(level, lambda v: v > limits["max_noise"])})
    for factor in EXPOSURE_LADDER:
        level = _level(open_gate(max_clipped=1.0), val, _brighter(factor), "clipped_fraction", seed)
        ladders["exposure"].append({"level": factor, **_scores(level),
                                    "rejected_by_class": _rejected_by_class(level,
                                                                            lambda v: v > limits["max_clipped"])})
    return {
        "limits": limits,
        "fitted_on": f"validation split ({len(val)} fields) through the device pipeline; clean extremes over "
                     f"{clean['n']} training and validation fields",
        "clean": {k: round(float(v), 4) for k, v in clean.items()},
        "focus_failing_sigma": failing,
        "focus_rule": why,
        "criteria": {"accuracy_drop": ACCURACY_DROP, "min_sensitivity": MIN_SENSITIVITY},
        "ladders": ladders,
    }


def gate_table(gate: dict[str, Any]) -> str:
    """The ladders as a Markdown table for the model card."""
    rows = ["| degradation | level | accuracy (classified) | malignant sensitivity (classified) | "
            "malignant called negative | rejected by the fitted limit (benign / early / pre / pro) |",
            "|---|---|---|---|---|---|"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    for name, ladder in gate["ladders"].items():
        for row in ladder:
            rejected = " / ".join(pct(row["rejected_by_class"][label]) for label in LABELS)
            rows.append(f"| {name} | {row['level']:g} | {pct(row['accuracy'])} | {pct(row['malignant_sensitivity'])} | "
                        f"{row['malignant_called_negative']} | {rejected} |")
    return "\n".join(rows)

