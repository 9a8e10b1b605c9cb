"""From model probabilities to a screening answer: calibration, label, call.

Temperature scaling is applied to log-probabilities (the model ends in a softmax, so
``softmax(log p / T)`` equals softmax of the logits divided by T). The malignant
probability is one minus the benign probability; inside the manifest's uncertain band
the label is ``uncertain`` and the call asks for another field or a human read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from edge.analysis.labels import BENIGN, LABELS

#: Floor applied before the log: a uint8 softmax output cannot resolve below 1/256.
PROBABILITY_FLOOR = 1.0 / 512


@dataclass(frozen=True)
class Calibration:
    temperature: float = 1.0
    malignant_threshold: float = 0.5
    uncertain_low: float = 0.5
    uncertain_high: float = 0.5

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError("calibration temperature must be positive")
        if not 0.0 <= self.uncertain_low <= self.malignant_threshold <= self.uncertain_high <= 1.0:
            raise ValueError("calibration needs 0 <= uncertain_low <= malignant_threshold <= uncertain_high <= 1")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        return cls(**{k: float(v) for k, v in data.items()})


@dataclass(frozen=True)
class Screening:
    label: str  # one of LABELS, or "uncertain"
    probabilities: dict[str, float]  # calibrated, in LABELS order
    malignant_probability: float
    call: str  # "positive" | "negative" | "uncertain"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities (rows sum to one)."""
    logp = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR)) / temperature
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=-1, keepdims=True)


def screen(raw_probabilities: np.ndarray, calibration: Calibration) -> Screening:
    """The screening answer for one field's raw model probabilities (len(LABELS),)."""
    p = calibrated(raw_probabilities, calibration.temperature)
    malignant = float(1.0 - p[LABELS.index(BENIGN)])
    if calibration.uncertain_low <= malignant < calibration.uncertain_high:
        call, label = "uncertain", "uncertain"
    else:
        call = "positive" if malignant >= calibration.malignant_threshold else "negative"
        if call == "negative":
            label = BENIGN
        else:
            label = max((lab for lab in LABELS if lab != BENIGN), key=lambda lab: p[LABELS.index(lab)])
    return Screening(label, {lab: float(p[i]) for i, lab in enumerate(LABELS)}, malignant, call)
