"""Speed of the per-field path, measured on the shipped sample fields.

Prints p50/p95 per stage (resize, segmentation, inference) and end to end, for fields at
the model's 224x224 and at a camera-like 1024x768, plus the exact 2-means split against
iterative cv2.kmeans. OpenCV runs on one thread so the segmentation figure is per core.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.dataset import read_rgb
from edge.pipeline import Pipeline
from edge.segmentation import kmeans_threshold_reference, segment

SAMPLES = Path(__file__).resolve().parent / "samples"


def sample_fields() -> list[np.ndarray]:
    paths = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() == ".jpg")
    if not paths:
        raise FileNotFoundError(f"{SAMPLES}: no sample fields")
    return [read_rgb(p) for p in paths]


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 3), "p95": round(float(np.percentile(values, 95)), 3)}


def _time_ms(fn, fields: list[np.ndarray], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        for f in fields:
            t = time.perf_counter()
            fn(f)
            out.append((time.perf_counter() - t) * 1000.0)
    return out


def run_bench(pipeline: Pipeline, repeats: int = 20) -> dict[str, Any]:
    cv2.setNumThreads(1)
    fields = sample_fields()
    small = [cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA) for f in fields]
    params = pipeline.bundle.segmentation
    report: dict[str, Any] = {
        "fields": len(fields),
        "repeats": repeats,
        "backend": pipeline.backends.name,
        "segmentation_224_ms": _percentiles(_time_ms(lambda f: segment(f, params), small, repeats)),
        "cv2_kmeans_reference_224_ms": _percentiles(_time_ms(kmeans_threshold_reference, small, max(1, repeats // 4))),
    }
    for name, size in (("224x224", None), ("1024x768", (1024, 768))):
        frames = small if size is None else [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in fields]
        pipeline.process(frames[0])  # warm-up
        stages: dict[str, list[float]] = {}
        end_to_end: list[float] = []
        for _ in range(repeats):
            for frame in frames:
                t = time.perf_counter()
                result = pipeline.process(frame)
                end_to_end.append((time.perf_counter() - t) * 1000.0)
                for stage, ms in result.timings_ms.items():
                    stages.setdefault(stage, []).append(ms)
        report[name] = {
            "stages_ms": {k: _percentiles(v) for k, v in stages.items()},
            "end_to_end_ms": _percentiles(end_to_end),
            "fields_per_s": round(1000.0 / float(np.mean(end_to_end)), 1),
        }
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    return report
