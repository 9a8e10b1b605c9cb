"""Evaluate a bundle on labelled folders exactly as the device runs it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge.bundle import Bundle
from edge.dataset import Dataset, read_rgb
from edge.metrics import summarize
from edge.pipeline import Pipeline


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


def classify_samples(pipeline: Pipeline, samples: list) -> tuple[list[np.ndarray | None], list[float]]:
    """Raw probabilities per sample (None where the device rejected the field) and the time
    each field took. Raw probabilities do not depend on calibration, so one pass serves
    both fitting it and reporting with it."""
    raws: list[np.ndarray | None] = []
    field_ms: list[float] = []
    for sample in samples:
        rgb = read_rgb(sample.path)
        start = time.perf_counter()
        result = pipeline.process(rgb, source=str(sample.path))
        field_ms.append((time.perf_counter() - start) * 1000.0)
        raws.append(result.raw_probabilities)
    return raws, field_ms


def evaluation_report(pipeline: Pipeline, samples: list, raws: list[np.ndarray | None], field_ms: list[float]) -> dict[str, Any]:
    report = summarize([s.label for s in samples], raws, pipeline.bundle.calibration)
    report["ms_per_field"] = float(np.mean(field_ms)) if field_ms else None
    report["backend"] = pipeline.backends.name
    report["model_id"] = pipeline.bundle.model_id
    return report


def evaluate(pipeline: Pipeline, samples: list) -> dict[str, Any]:
    return evaluation_report(pipeline, samples, *classify_samples(pipeline, samples))
