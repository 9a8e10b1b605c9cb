"""Screening metrics with 95% confidence intervals.

Three views of the same predictions:
- 4-class: argmax of the calibrated probabilities, the confusion matrix, accuracy;
- malignant vs benign at the manifest's threshold (``malignant_sensitivity``,
  ``benign_specificity``): the classic operating point;
- the screening calls with the uncertain band: malignant fields *flagged* (called positive
  or uncertain, i.e. not cleared), benign fields *cleared* (called negative), and how many
  fields were left uncertain for a human read.
A field the device rejected (quality gate, no cells) counts as an error in every view.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from edge.labels import BENIGN, LABELS
from edge.screening import Calibration, screen


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (sensible near 0 and 1, small n)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rate(successes: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(successes, n)
    return {"value": successes / n if n else None, "ci95": [lo, hi], "k": successes, "n": n}


def summarize(true_labels: Sequence[str], raw_probabilities: Sequence[np.ndarray | None], calibration: Calibration) -> dict[str, Any]:
    """Metrics for fields with known labels; ``None`` marks a field that was not classified."""
    k = len(LABELS)
    confusion = np.zeros((k, k), dtype=int)
    rejected = np.zeros(k, dtype=int)
    sens_hits = sens_n = spec_hits = spec_n = uncertain = flagged = cleared = 0
    for truth, raw in zip(true_labels, raw_probabilities):
        t = LABELS.index(truth)
        malignant = truth != BENIGN
        sens_n += malignant
        spec_n += not malignant
        if raw is None:
            rejected[t] += 1
            continue
        result = screen(raw, calibration)
        confusion[t, int(np.argmax(list(result.probabilities.values())))] += 1
        above = result.malignant_probability >= calibration.malignant_threshold
        sens_hits += malignant and above
        spec_hits += (not malignant) and not above
        uncertain += result.call == "uncertain"
        flagged += malignant and result.call != "negative"
        cleared += (not malignant) and result.call == "negative"
    n = len(true_labels)
    correct = int(np.trace(confusion))
    per_class = {}
    for i, label in enumerate(LABELS):
        predicted, actual = int(confusion[:, i].sum()), int(confusion[i].sum() + rejected[i])
        per_class[label] = {
            "precision": confusion[i, i] / predicted if predicted else None,
            "recall": confusion[i, i] / actual if actual else None,
            "support": actual,
        }
    acc = _rate(correct, n)
    sens = _rate(sens_hits, sens_n)
    spec = _rate(spec_hits, spec_n)
    flag = _rate(flagged, sens_n)
    clear = _rate(cleared, spec_n)
    return {
        "n": n,
        "accuracy": acc["value"],
        "accuracy_ci95": acc["ci95"],
        "per_class": per_class,
        "labels": list(LABELS),
        "confusion": confusion.tolist(),
        "malignant_sensitivity": sens["value"],
        "malignant_sensitivity_ci95": sens["ci95"],
        "benign_specificity": spec["value"],
        "benign_specificity_ci95": spec["ci95"],
        "screening": {
            "malignant_flagged": flag["value"], "malignant_flagged_ci95": flag["ci95"],
            "benign_cleared": clear["value"], "benign_cleared_ci95": clear["ci95"],
        },
        "uncertain": uncertain,
        "unclassified": int(rejected.sum()),
    }
