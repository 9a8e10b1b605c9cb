"""Evaluate a bundle on labelled folders exactly as the device runs it."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from edge.model.bundle import Bundle
from edge.analysis.case import CaseRule, case_call
from edge.evaluation.dataset import Dataset, number_blocks
from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import BENIGN, LABELS
from edge.evaluation.metrics import _rate, auc, summarize
from edge.pipeline import Pipeline
from edge.analysis.screening import screen


def samples_for_split(bundle: Bundle, dataset: Dataset, split: str) -> list:
    """The dataset's samples in the bundle's recorded split (``all`` for every sample)."""
    if split == "all":
        return list(dataset.samples)
    keys = set(bundle.manifest.get("split", {}).get("keys", {}).get(split, []))
    if not keys:
        raise ValueError(f"the bundle records no {split!r} split; use --split all")
    chosen = [s for s in dataset.samples if s.key in keys]
    if not chosen:
        raise ValueError(f"none of the bundle's {split!r} files are in {dataset.root}; use --split all")
    return chosen


class Readings(NamedTuple):
    """What the device computed for each field of a list, in order: the raw (pooled)
    probabilities (None where it refused the field), how many recognised white cells each
    call rests on (None for a field model) and the time each field took. Raw probabilities do
    not depend on calibration, so one pass serves both fitting it and reporting with it; the
    counts go with them because the call depends on them (``Calibration.min_cells_to_clear``)."""

    raws: list[np.ndarray | None]
    cells: list[int | None]
    ms: list[float]
    #: The recognised white cells called blasts in each field (None for a field model): the
    #: case call holds a case whose blasts are many (``edge.analysis.case``).
    blasts: list[int | None]


def classify_samples(pipeline: Pipeline, samples: list) -> Readings:
    """Each sample through the device pipeline (``Readings``)."""
    readings = Readings([], [], [], [])
    for sample in samples:
        rgb = read_rgb(sample.path)
        start = time.perf_counter()
        result = pipeline.process(rgb, source=str(sample.path))
        readings.ms.append((time.perf_counter() - start) * 1000.0)
        readings.raws.append(result.raw_probabilities)
        readings.cells.append(result.white_cells)
        readings.blasts.append(result.blasts)
    return readings


def evaluation_report(pipeline: Pipeline, samples: list, readings: Readings) -> dict[str, Any]:
    report = summarize([s.label for s in samples], readings.raws, pipeline.bundle.calibration, readings.cells)
    report["ms_per_field"] = float(np.mean(readings.ms)) if readings.ms else None
    report["backend"] = pipeline.backends.name
    report["model_id"] = pipeline.bundle.model_id
    return report


def evaluate(pipeline: Pipeline, samples: list, case_sizes: list[int] | None = None) -> dict[str, Any]:
    readings = classify_samples(pipeline, samples)
    report = evaluation_report(pipeline, samples, readings)
    report["blocks"] = block_report(pipeline.bundle, samples, readings)
    report["ranking"] = ranking_report(samples, readings)
    if case_sizes:
        if "case_rule" not in pipeline.bundle.manifest:
            raise ValueError(f"{pipeline.bundle.root}: the bundle has no case rule (built before cases); rebuild it")
        cases = [case_report(pipeline.bundle, samples, readings, k) for k in case_sizes]
        report["cases"] = cases[0] if len(cases) == 1 else cases
    return report


def field_records(bundle: Bundle, readings: Readings) -> list[dict[str, Any]]:
    """What the device would store for each field: status, the shown label and the call."""
    out = []
    for raw, cells, blast in zip(readings.raws, readings.cells, readings.blasts):
        if raw is None:
            out.append({"status": "rejected", "label": None, "call": None})
        else:
            shown = screen(raw, bundle.calibration, cells)
            record: dict[str, Any] = {"status": "classified", "label": shown.label, "call": shown.call}
            if cells is not None and blast is not None:
                record.update(white_cells=cells, blasts=blast)
            out.append(record)
    return out


def ranking_report(samples: list, readings: Readings, sensitivities: tuple[float, ...] = (0.995, 0.99, 0.983)
                   ) -> dict[str, Any]:
    """How well the model separates benign from malignant fields, apart from any operating point
    (issue 32: a build can rank fields better and still read worse at a fragile operating point):
    the AUC of the pooled malignant share over the fields it classified, and the share of benign
    fields below the threshold that keeps each of ``sensitivities`` of the malignant ones."""
    kept = [(s.label != BENIGN, 1.0 - float(raw[LABELS.index(BENIGN)]))
            for s, raw in zip(samples, readings.raws) if raw is not None]
    malignant = np.array([m for m, _ in kept], bool)
    score = np.array([v for _, v in kept])
    if malignant.all() or not malignant.any():
        return {"auc": None, "fields": len(kept)}
    pos, neg = score[malignant], score[~malignant]
    below = {f"{s:g}": round(float((neg < np.quantile(pos, 1.0 - s)).mean()), 4) for s in sensitivities}
    return {"auc": round(auc(score, malignant), 4), "fields": len(kept), "benign_cleared_at_sensitivity": below,
            "score": "the pooled share of the three B-ALL labels (1 - benign), before calibration"}


def _blocks(bundle: Bundle, samples: list) -> dict[tuple[str, int], list[int]]:
    """The samples' indices per patient-proxy block (the split's blocks of file numbers per
    class), each block's in file order."""
    block_size = int(bundle.manifest.get("split", {}).get("block_size", 25))
    blocks: dict[tuple[str, int], list[int]] = {}
    for i, block in enumerate(number_blocks(samples, block_size)):
        blocks.setdefault(block, []).append(i)
    for members in blocks.values():
        members.sort(key=lambda i: (samples[i].number or -1, samples[i].key))
    return blocks


def block_report(bundle: Bundle, samples: list, readings: Readings) -> dict[str, Any]:
    """The spread over patient-proxy blocks (issue 32: an operating point fitted on a few
    patients hides how it holds on each): per block, its fields' calls; per side, the share of a
    block's fields called right (benign: negative; malignant: positive), its lowest, median and
    highest over the blocks. A refused or uncertain field is not called right."""
    records = field_records(bundle, readings)
    rows: list[dict[str, Any]] = []
    shares: dict[str, list[float]] = {"benign": [], "malignant": []}
    for (label, number), members in sorted(_blocks(bundle, samples).items()):
        calls = [records[i]["call"] or "refused" for i in members]
        side = "benign" if label == BENIGN else "malignant"
        right = calls.count("negative" if side == "benign" else "positive") / len(calls)
        shares[side].append(right)
        rows.append({"label": label, "block": number, "fields": len(calls), "right": round(right, 4),
                     **{c: calls.count(c) for c in ("positive", "negative", "uncertain", "refused")}})
    spread = {side: ({"blocks": len(v), "lowest": round(min(v), 4), "median": round(float(np.median(v)), 4),
                      "highest": round(max(v), 4)} if v else None) for side, v in shares.items()}
    return {"per_block": rows, "spread": spread,
            "right_means": "benign: fields called negative; malignant: fields called positive"}


def case_report(bundle: Bundle, samples: list, readings: Readings, size: int,
                min_fields: int | None = None) -> dict[str, Any]:
    """Case-level figures: non-overlapping cases of ``size`` consecutive fields drawn from one
    patient-proxy block (the split's blocks of file numbers per class), called by the
    bundle's case rule exactly as the device calls a case. A case the rule leaves pending
    (too few usable fields) or uncertain is neither detected nor cleared."""
    rule = CaseRule.from_dict(bundle.manifest["case_rule"])
    records = field_records(bundle, readings)
    calls: dict[str, list[str]] = {"malignant": [], "benign": []}
    for (label, _), members in sorted(_blocks(bundle, samples).items()):
        for start in range(0, len(members) - size + 1, size):
            call = case_call([records[i] for i in members[start:start + size]], rule, min_fields).call
            calls["benign" if label == BENIGN else "malignant"].append(call)
    sens = _rate(calls["malignant"].count("positive"), len(calls["malignant"]))
    spec = _rate(calls["benign"].count("negative"), len(calls["benign"]))
    every = calls["malignant"] + calls["benign"]
    return {
        "size": size, "n": len(every), "n_malignant": len(calls["malignant"]), "n_benign": len(calls["benign"]),
        "sensitivity": sens["value"], "sensitivity_ci95": sens["ci95"],
        "specificity": spec["value"], "specificity_ci95": spec["ci95"],
        "uncertain": every.count("uncertain") + every.count("pending"), "pending": every.count("pending"),
        "malignant_called_negative": calls["malignant"].count("negative"),
        "benign_called_positive": calls["benign"].count("positive"),
        "rule": rule.to_dict(),
    }
