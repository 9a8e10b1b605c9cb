"""Screening metrics with 95% confidence intervals, scoring the label the device shows.

One definition for the page, the call and the metrics (``edge.analysis.screening.screen``): a field's
label is the one the page shows (benign when called negative, the most likely subtype when
called positive, ``uncertain`` inside the band), and that label is what is scored. The
argmax of the probabilities is never scored: it can differ from what a clinician sees.
- 4-class: accuracy of the shown label over all fields (uncertain and rejected fields count
  as not correct) and over decided fields; confusion of truth (rows) by shown label
  (columns), with uncertain and rejected fields counted per class beside it;
- malignant sensitivity: malignant fields called positive; benign specificity: benign fields
  called negative (an uncertain field is neither: it is counted in ``uncertain``);
- screening: malignant fields *flagged* (not called negative), benign fields *cleared*.
A field the device rejected (quality gate, no cells) counts as an error in every view.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edge.analysis.labels import BENIGN, LABELS
from edge.analysis.screening import Calibration, screen
from edge.analysis.verification import wilson_interval


def _rate(successes: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(successes, n)
    return {"value": successes / n if n else None, "ci95": [lo, hi], "k": successes, "n": n}


def summarize(true_labels: Sequence[str], raw_probabilities: Sequence[np.ndarray | None], calibration: Calibration,
              cells: Sequence[int | None] | None = None) -> dict[str, Any]:
    """Metrics for fields with known labels; ``None`` marks a field that was not classified.
    ``cells``: how many recognised white cells each field's call rests on (a cell bundle's;
    None for a field model), which ``screen`` needs to call the field as the device does."""
    if cells is None:
        cells = [None] * len(raw_probabilities)
    k = len(LABELS)
    confusion = np.zeros((k, k), dtype=int)
    rejected = np.zeros(k, dtype=int)
    uncertain_by_class = np.zeros(k, dtype=int)
    sens_hits = sens_n = spec_hits = spec_n = flagged = cleared = 0
    for truth, raw, count in zip(true_labels, raw_probabilities, cells, strict=True):
        t = LABELS.index(truth)
        malignant = truth != BENIGN
        sens_n += malignant
        spec_n += not malignant
        if raw is None:
            rejected[t] += 1
            continue
        result = screen(raw, calibration, count)
        if result.label == "uncertain":
            uncertain_by_class[t] += 1
        else:
            confusion[t, LABELS.index(result.label)] += 1
        sens_hits += malignant and result.call == "positive"
        spec_hits += (not malignant) and result.call == "negative"
        flagged += malignant and result.call != "negative"
        cleared += (not malignant) and result.call == "negative"
    n = len(true_labels)
    correct = int(np.trace(confusion))
    decided = int(confusion.sum())
    per_class = {}
    for i, label in enumerate(LABELS):
        predicted, actual = int(confusion[:, i].sum()), int(confusion[i].sum() + rejected[i] + uncertain_by_class[i])
        per_class[label] = {
            "precision": confusion[i, i] / predicted if predicted else None,
            "recall": confusion[i, i] / actual if actual else None,
            "support": actual,
        }
    acc = _rate(correct, n)
    acc_decided = _rate(correct, decided)
    sens = _rate(sens_hits, sens_n)
    spec = _rate(spec_hits, spec_n)
    flag = _rate(flagged, sens_n)
    clear = _rate(cleared, spec_n)
    return {
        "scored": "the label the device shows (edge.analysis.screening.screen)",
        "n": n,
        "accuracy": acc["value"],
        "accuracy_ci95": acc["ci95"],
        "accuracy_decided": acc_decided["value"],
        "accuracy_decided_ci95": acc_decided["ci95"],
        "per_class": per_class,
        "labels": list(LABELS),
        "confusion": confusion.tolist(),
        "uncertain_by_class": uncertain_by_class.tolist(),
        "rejected_by_class": rejected.tolist(),
        "malignant_sensitivity": sens["value"],
        "malignant_sensitivity_ci95": sens["ci95"],
        "benign_specificity": spec["value"],
        "benign_specificity_ci95": spec["ci95"],
        "screening": {
            "malignant_flagged": flag["value"], "malignant_flagged_ci95": flag["ci95"],
            "benign_cleared": clear["value"], "benign_cleared_ci95": clear["ci95"],
        },
        "uncertain": int(uncertain_by_class.sum()),
        "unclassified": int(rejected.sum()),
    }


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties shared)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # mean rank for ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    pos = truth.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
