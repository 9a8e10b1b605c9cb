"""Fit the manifest's calibration on the validation split (never on test).

Temperature: the value minimising validation negative log-likelihood of the int8
model's probabilities. Then, on the calibrated malignant probability m:
- ``low``: the highest threshold that keeps validation sensitivity at the target
  (at most that share of malignant fields below it);
- ``high``: the lowest threshold that keeps validation specificity at the target
  (that share of benign fields below it).
When ``low >= high`` the classes separate at both targets: the threshold is their
midpoint and there is no uncertain band. Otherwise the threshold is ``low`` (sensitivity
comes first in screening) and ``[low, high)`` is the uncertain band: the fields the
model cannot place at the required sensitivity and specificity, sent for a human read.
"""

from __future__ import annotations

import math

import numpy as np

from edge.labels import BENIGN, LABELS
from edge.screening import Calibration, calibrated

TEMPERATURES = np.geomspace(0.2, 5.0, 161)


def fit_temperature(raw: np.ndarray, truth: np.ndarray) -> float:
    nll = [-np.mean(np.log(calibrated(raw, t)[np.arange(len(truth)), truth])) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


def fit_calibration(raw: np.ndarray, truth: np.ndarray, target_sensitivity: float = 0.995,
                    target_specificity: float = 0.97) -> Calibration:
    """``raw``: (N, 4) int8-model probabilities on validation; ``truth``: label indices."""
    temperature = fit_temperature(raw, truth)
    m = 1.0 - calibrated(raw, temperature)[:, LABELS.index(BENIGN)]
    is_malignant = truth != LABELS.index(BENIGN)
    malignant, benign = np.sort(m[is_malignant]), np.sort(m[~is_malignant])
    low = float(malignant[math.floor((1 - target_sensitivity) * len(malignant))]) if len(malignant) else 1.0
    high = float(np.nextafter(benign[math.ceil(target_specificity * len(benign)) - 1], 2.0)) if len(benign) else 0.0
    low, high = round(min(low, 1.0), 6), round(min(high, 1.0), 6)
    if low >= high:
        threshold = round((low + high) / 2, 6)
        return Calibration(round(temperature, 4), threshold, threshold, threshold)
    return Calibration(round(temperature, 4), low, low, high)
