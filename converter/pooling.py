"""Which rule turns a field's cells into the field's call: the candidates compared on the
validation split, through the device pipeline.

The device pools with the renormalised geometric mean (``edge.analysis.cells.pool``). Every
rule here is fed the same recognised cells' raw probabilities of each validation field (the
fields run without the quality gate or case rule, as the calibration is fitted), calibrated
the way the build calibrates (``converter.calibration.fit_calibration`` with the bundle's
recorded targets and band kind) and scored on the label the device would show. The figures
are in-sample for the calibration (fitted and scored on validation), the same for every
rule; the AUC does not depend on the thresholds. Test fields are never read here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from converter.calibration import fit_calibration
from edge.analysis.cells import pool as geometric
from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import BENIGN, LABELS
from edge.analysis.screening import Calibration, screen
from edge.evaluation.dataset import Sample
from edge.model.bundle import Bundle
from edge.pipeline import Pipeline

_B = LABELS.index(BENIGN)


def arithmetic(cells: np.ndarray) -> np.ndarray:
    """The mean of the cells' probabilities."""
    p = np.asarray(cells, np.float64).mean(0)
    return p / p.sum()


def median(cells: np.ndarray) -> np.ndarray:
    """Each class's median over the cells, renormalised."""
    p = np.median(np.asarray(cells, np.float64), 0) + 1e-6
    return p / p.sum()


def trimmed(cells: np.ndarray) -> np.ndarray:
    """The geometric mean without the most and the least benign-looking cell (4 cells or more)."""
    cells = np.asarray(cells, np.float64)
    if len(cells) < 4:
        return geometric(cells)
    order = np.argsort(cells[:, _B])
    return geometric(cells[order[1:-1]])


def most_malignant(cells: np.ndarray) -> np.ndarray:
    """The probabilities of the cell least likely benign: one blast makes the field."""
    cells = np.asarray(cells, np.float64)
    return cells[int(np.argmin(cells[:, _B]))]


def blast_share(cells: np.ndarray) -> np.ndarray:
    """The share of cells called a blast as the malignant probability, shared among the
    subtypes as the geometric mean shares them: the count a hematologist makes."""
    cells = np.asarray(cells, np.float64)
    share = float((cells.argmax(1) != _B).mean())
    subtypes = geometric(cells)
    subtypes[_B] = 0.0
    out = subtypes / max(float(subtypes.sum()), 1e-12) * share
    out[_B] = 1.0 - share
    out = np.clip(out, 1e-4, 1.0)
    return out / out.sum()


#: The candidates, the device's own rule first.
RULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "geometric mean (device)": geometric, "arithmetic mean": arithmetic, "median": median,
    "trimmed geometric mean": trimmed, "most malignant cell": most_malignant, "blast share": blast_share,
}


@dataclass(frozen=True)
class RuleFigures:
    rule: str
    fields: int
    auc: float  # malignant against benign fields, on the calibrated malignant probability
    accuracy: float  # 4-class, on the label shown ("uncertain" counts as wrong)
    sensitivity: float  # malignant fields called positive
    specificity: float  # benign fields called negative
    uncertain: int
    malignant_negative: int  # malignant fields called negative
    calibration: Calibration


def field_cells(bundle: Bundle, samples: list[Sample]) -> list[tuple[Sample, np.ndarray]]:
    """Each classified field's recognised cells' raw probabilities, through the device
    pipeline without the quality gate or case rule (as the calibration is fitted)."""
    ungated = dataclasses.replace(bundle, calibration=Calibration(), manifest={
        k: v for k, v in bundle.manifest.items() if k not in ("quality_gate", "case_rule")})
    pipeline = Pipeline.on_cpu(ungated)
    out = []
    for sample in samples:
        result = pipeline.process(read_rgb(sample.path), source="pooling")
        if result.classified and result.cells:
            cells = np.array([[c.probabilities[label] for label in LABELS] for c in result.cells if c.familiar])
            if len(cells):
                out.append((sample, cells))
    return out


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    if not len(positive) or not len(negative):
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return float(greater / (len(positive) * len(negative)))


def compare(bundle: Bundle, fields: list[tuple[Sample, np.ndarray]]) -> list[RuleFigures]:
    """Every rule of ``RULES`` on ``fields`` (from ``field_cells``), calibrated as the build does."""
    recorded = bundle.manifest.get("calibration_fit", {}).get("int8", {})
    targets = recorded.get("targets", {})
    truth = np.array([LABELS.index(s.label) for s, _ in fields])
    malignant = truth != _B
    out = []
    for name, rule in RULES.items():
        raw = np.stack([rule(cells) for _, cells in fields]).astype(np.float32)
        calibration = fit_calibration(raw, truth, target_sensitivity=float(targets.get("sensitivity", 0.995)),
                                      target_specificity=float(targets.get("specificity", 0.97)),
                                      band=str(recorded.get("band", "targets"))).calibration
        shown = [screen(r, calibration) for r in raw]
        m = np.array([s.malignant_probability for s in shown])
        calls = np.array([s.call for s in shown])
        out.append(RuleFigures(
            name, len(fields), round(_auc(m[malignant], m[~malignant]), 4),
            round(float(np.mean([s.label == LABELS[t] for s, t in zip(shown, truth)])), 4),
            round(float(np.mean(calls[malignant] == "positive")), 4) if malignant.any() else float("nan"),
            round(float(np.mean(calls[~malignant] == "negative")), 4) if (~malignant).any() else float("nan"),
            int((calls == "uncertain").sum()), int((calls[malignant] == "negative").sum()), calibration))
    return out


def table(figures: list[RuleFigures], split: str) -> str:
    lines = [f"Field rules on the {split} split ({figures[0].fields if figures else 0} fields with recognised cells; "
             "each rule calibrated on these fields as the build calibrates, so the figures are in-sample):",
             "| rule | AUC | 4-class accuracy | sensitivity | specificity | uncertain | malignant called negative |",
             "|---|---|---|---|---|---|---|"]
    for f in figures:
        lines.append(f"| {f.rule} | {f.auc:.4f} | {f.accuracy:.1%} | {f.sensitivity:.1%} | {f.specificity:.1%} | "
                     f"{f.uncertain} | {f.malignant_negative} |")
    return "\n".join(lines)
