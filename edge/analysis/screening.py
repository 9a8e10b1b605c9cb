"""From model probabilities to a screening answer: calibration, label, call.

Temperature scaling is applied to log-probabilities (the model ends in a softmax, so
``softmax(log p / T)`` equals softmax of the logits divided by T). The malignant
probability is one minus the benign probability; inside the manifest's uncertain band
the label is ``uncertain`` and the call asks for another field or a human read.

A cell bundle's field call rests on the white cells it pooled. A field read from one cell
carries one cell's evidence, and one lymphocyte-like blast read as benign would clear it; so
a negative call needs at least ``min_cells_to_clear`` recognised cells, and a field with fewer
is ``uncertain`` with the reason said (``FEW_CELLS``). A positive call is never held back: a
single cell read as a blast is worth a human read. The count is fitted on validation
(``converter.cell_count``); 1, the default, is no rule (bundles that name none, field bundles).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from edge.analysis.labels import BENIGN, LABELS

#: Floor applied before the log: a uint8 softmax output cannot resolve below 1/256.
PROBABILITY_FLOOR = 1.0 / 512

#: Why a field that would be called negative is uncertain instead (``min_cells_to_clear``).
FEW_CELLS = "too few white cells to call this field negative: analyse more fields of this slide"


@dataclass(frozen=True)
class Calibration:
    temperature: float = 1.0
    malignant_threshold: float = 0.5
    uncertain_low: float = 0.5
    uncertain_high: float = 0.5
    #: The fewest recognised white cells a negative field call may rest on (1: any number).
    min_cells_to_clear: int = 1

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError("calibration temperature must be positive")
        if not 1 <= self.min_cells_to_clear <= 100:
            raise ValueError(f"calibration min_cells_to_clear must be a whole number from 1 to 100, "
                             f"not {self.min_cells_to_clear!r}")
        if not 0.0 <= self.uncertain_low <= self.malignant_threshold <= self.uncertain_high <= 1.0:
            raise ValueError("calibration needs 0 <= uncertain_low <= malignant_threshold <= uncertain_high <= 1")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        count = data.get("min_cells_to_clear", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"calibration min_cells_to_clear must be a whole number, not {count!r}")
        return cls(**{k: float(v) for k, v in data.items() if k != "min_cells_to_clear"}, min_cells_to_clear=count)


@dataclass(frozen=True)
class Screening:
    label: str  # one of LABELS, or "uncertain"
    probabilities: dict[str, float]  # calibrated, in LABELS order
    malignant_probability: float
    call: str  # "positive" | "negative" | "uncertain"
    #: Why the call is uncertain when the band did not make it so (``FEW_CELLS``); else None.
    call_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities (rows sum to one)."""
    logp = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), PROBABILITY_FLOOR)) / temperature
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=-1, keepdims=True)


def near_an_edge(raw_probabilities: np.ndarray, calibration: Calibration, margin: float) -> bool:
    """Whether a field's calibrated malignant probability lies within ``margin`` (in log-odds) of
    the threshold or an edge of the uncertain band: where reading the cells' other views could
    change the call (``edge.model.views.ViewReader``)."""
    p = calibrated(raw_probabilities, calibration.temperature)
    m = float(np.clip(1.0 - p[LABELS.index(BENIGN)], 1e-9, 1 - 1e-9))
    edges = {calibration.uncertain_low, calibration.malignant_threshold, calibration.uncertain_high}
    logit = np.log(m / (1 - m))
    return any(abs(logit - np.log(e / (1 - e))) < margin for e in edges if 0.0 < e < 1.0)


def screen(raw_probabilities: np.ndarray, calibration: Calibration, cells: int | None = None) -> Screening:
    """The screening answer for one field's raw model probabilities (len(LABELS),), pooled
    from ``cells`` recognised white cells (None: a field model, which reads the whole field)."""
    p = calibrated(raw_probabilities, calibration.temperature)
    malignant = float(1.0 - p[LABELS.index(BENIGN)])
    probabilities = {lab: float(p[i]) for i, lab in enumerate(LABELS)}
    if calibration.uncertain_low <= malignant < calibration.uncertain_high:
        return Screening("uncertain", probabilities, malignant, "uncertain")
    if malignant >= calibration.malignant_threshold:
        label = max((lab for lab in LABELS if lab != BENIGN), key=lambda lab: p[LABELS.index(lab)])
        return Screening(label, probabilities, malignant, "positive")
    if cells is not None and cells < calibration.min_cells_to_clear:
        return Screening("uncertain", probabilities, malignant, "uncertain", FEW_CELLS)
    return Screening(BENIGN, probabilities, malignant, "negative")
