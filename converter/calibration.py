"""Fit the manifest's calibration on the validation split (never on test).

Temperature: the value minimising validation negative log-likelihood of the int8
model's probabilities. Threshold: among thresholds that keep validation malignant
sensitivity at or above the target, the one with the best specificity (ties: nearest
0.5). Uncertain band: the narrowest band around the threshold outside which every
validation field is called correctly, capped at +/-0.3 so the device still answers.
"""

from __future__ import annotations

import numpy as np

from edge.labels import BENIGN, LABELS
from edge.screening import Calibration, calibrated

TEMPERATURES = np.geomspace(0.2, 5.0, 161)
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)
BAND_HALF_WIDTHS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def fit_temperature(raw: np.ndarray, truth: np.ndarray) -> float:
    nll = [-np.mean(np.log(calibrated(raw, t)[np.arange(len(truth)), truth])) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def fit_calibration(raw: np.ndarray, truth: np.ndarray, target_sensitivity: float = 0.995) -> Calibration:
    """``raw``: (N, 4) int8-model probabilities on validation; ``truth``: label indices."""
    temperature = fit_temperature(raw, truth)
    malignant_p = 1.0 - calibrated(raw, temperature)[:, LABELS.index(BENIGN)]
    is_malignant = truth != LABELS.index(BENIGN)
    best = (-1.0, 0.0, 0.5)
    for t in THRESHOLDS:
        sens = np.mean(malignant_p[is_malignant] >= t) if is_malignant.any() else 1.0
        spec = np.mean(malignant_p[~is_malignant] < t) if (~is_malignant).any() else 1.0
        if sens >= target_sensitivity:
            score = (spec, -abs(t - 0.5))
            if score > best[:2]:
                best = (spec, -abs(t - 0.5), float(t))
    threshold = best[2]
    for half in BAND_HALF_WIDTHS:
        lo, hi = max(0.0, threshold - half), min(1.0, threshold + half)
        outside = (malignant_p < lo) | (malignant_p >= hi)
        wrong = outside & ((malignant_p >= threshold) != is_malignant)
        if not wrong.any():
            break
    return Calibration(temperature=round(temperature, 4), malignant_threshold=threshold,
                       uncertain_low=round(lo, 4), uncertain_high=round(hi, 4))
