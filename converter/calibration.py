"""Fit a model's calibration on the validation split (never on test, never on data that
chose the weights: training runs a fixed schedule, see ``converter.train``).

Temperature: the value minimising validation negative log-likelihood, rounded to the
precision the manifest keeps *before* anything else is fitted with it, so the thresholds
are fitted on exactly the probabilities the device computes. Then, on the calibrated
malignant probability m:
- ``low``: the threshold keeping validation sensitivity at the target (at most that share
  of malignant fields below it);
- ``high``: the threshold keeping validation specificity at the target.
Each is an order statistic of a few hundred scores, so one field more or less moves it a
long way (the previous release's threshold was the second-lowest of 348 malignant scores,
with a bootstrap 90% range of 0.23-0.53). Each is therefore the mean over bootstrap
resamples of the validation split (bagging; in effect the Harrell-Davis quantile, a weighted
average of the neighbouring order statistics instead of one of them), and the 5th-95th
percentile range of those resamples is recorded beside it, so the manifest says how stable
the operating point is.
When ``low >= high`` the classes separate at both targets: the threshold is their midpoint
and there is no uncertain band. Otherwise the threshold is ``low`` (sensitivity comes first
in screening) and ``[low, high)`` is the uncertain band, sent for a human read.

The float model and the int8 model are each calibrated on their own outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.analysis.labels import BENIGN, LABELS
from edge.analysis.screening import Calibration, calibrated

TEMPERATURES = np.geomspace(0.2, 5.0, 161)
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class CalibrationFit:
    calibration: Calibration
    report: dict[str, Any] = field(default_factory=dict)  # bootstrap intervals, for the manifest


def fit_temperature(raw: np.ndarray, truth: np.ndarray) -> float:
    nll = [-np.mean(np.log(calibrated(raw, t)[np.arange(len(truth)), truth])) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def _low(malignant: np.ndarray, target_sensitivity: float) -> float:
    """The sensitivity threshold of a sorted array of malignant scores."""
    return float(malignant[math.floor((1 - target_sensitivity) * len(malignant))]) if len(malignant) else 1.0


def _high(benign: np.ndarray, target_specificity: float) -> float:
    """The specificity threshold of a sorted array of benign scores."""
    return float(np.nextafter(benign[math.ceil(target_specificity * len(benign)) - 1], 2.0)) if len(benign) else 0.0


def _bagged(scores: np.ndarray, statistic, target: float, rng: np.random.Generator,
            groups: np.ndarray | None = None) -> tuple[float, list[float]]:
    """Mean and 5th-95th percentile range of ``statistic`` over bootstrap resamples: of fields,
    or with ``groups`` (one a score) of whole groups, so the range says how the threshold moves
    from one set of patients to another, not from one set of fields of the same patients."""
    if len(scores) == 0:
        value = statistic(scores, target)
        return value, [value, value]
    if groups is not None:
        members = [scores[groups == g] for g in np.unique(groups)]

        def resample() -> np.ndarray:
            return np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
    else:
        def resample() -> np.ndarray:
            return rng.choice(scores, size=len(scores))
    values = np.array([statistic(np.sort(resample()), target) for _ in range(BOOTSTRAP_RESAMPLES)])
    return float(np.mean(values)), [round(float(v), 6) for v in np.percentile(values, [5, 95])]


def fit_calibration(raw: np.ndarray, truth: np.ndarray, target_sensitivity: float = 0.995,
                    target_specificity: float = 0.97, seed: int = 1234, band: str = "targets",
                    groups: np.ndarray | None = None, temperature: float | None = None,
                    fitted_on: str = "validation split") -> CalibrationFit:
    """``raw``: (N, 4) model probabilities on validation; ``truth``: label indices.

    ``band="targets"``: the uncertain band is ``[low, high)`` and vanishes when they cross.
    ``band="bootstrap"``: the band spans every place either threshold fell in 90% of the
    bootstrap resamples, so a field whose score lies where the operating point itself is
    unsure is called "uncertain" (sent for a human read), never "negative"; it has width
    even when the classes separate on validation.
    ``groups`` (a patient-proxy block a field): the bootstrap resamples whole blocks.
    ``temperature``: kept as given instead of fitted (scores of other models, fitted for this one's)."""
    temperature = round(fit_temperature(raw, truth), 4) if temperature is None else temperature
    m = 1.0 - calibrated(raw, temperature)[:, LABELS.index(BENIGN)]
    is_malignant = truth != LABELS.index(BENIGN)
    rng = np.random.default_rng(seed)
    low, low_range = _bagged(m[is_malignant], _low, target_sensitivity, rng,
                             None if groups is None else groups[is_malignant])
    high, high_range = _bagged(m[~is_malignant], _high, target_specificity, rng,
                               None if groups is None else groups[~is_malignant])
    low, high = round(min(low, 1.0), 6), round(min(high, 1.0), 6)
    threshold = round((low + high) / 2, 6) if low >= high else low
    if band == "bootstrap":
        lo = round(min(low_range[0], high_range[0], threshold), 6)
        hi = round(min(1.0, max(low_range[1], high_range[1], threshold)), 6)
        calibration = Calibration(temperature, threshold, lo, hi)
    elif low >= high:
        calibration = Calibration(temperature, threshold, threshold, threshold)
    else:
        calibration = Calibration(temperature, low, low, high)
    report = {
        "fitted_on": fitted_on,
        "resampled": "fields" if groups is None else f"whole patient-proxy blocks ({len(np.unique(groups))})",
        "band": band,
        "targets": {"sensitivity": target_sensitivity, "specificity": target_specificity},
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "sensitivity_threshold": {"bagged": low, "range_90": low_range,
                                  "single_fit": round(_low(np.sort(m[is_malignant]), target_sensitivity), 6)},
        "specificity_threshold": {"bagged": high, "range_90": high_range,
                                  "single_fit": round(min(_high(np.sort(m[~is_malignant]), target_specificity), 1.0), 6)},
        "validation_malignant": int(is_malignant.sum()), "validation_benign": int((~is_malignant).sum()),
        **({} if groups is None else {"blocks_malignant": int(len(np.unique(groups[is_malignant]))),
                                      "blocks_benign": int(len(np.unique(groups[~is_malignant])))}),
    }
    return CalibrationFit(calibration, report)
