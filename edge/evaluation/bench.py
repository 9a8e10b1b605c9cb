"""Speed of the device path, measured on the shipped sample fields.

Each sample is shown as a 1024x768 camera frame through an eyepiece (the field inside a
bright disc, black vignette around) and run through the whole path the daemon runs:
field of view, resize, quality, segmentation, inference (CPU), screening and storing.
Prints p50/p95 per stage and end to end, fields/s and peak RSS; also the exact 2-means
segmentation against iterative cv2.kmeans on 224x224 fields, on one OpenCV thread.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge import SAMPLES_DIR
from edge.model.bundle import Bundle
from edge.analysis.imagefile import read_rgb
from edge.pipeline import Pipeline
from edge.analysis.segmentation import kmeans_threshold_reference, segment
from edge.record.store import Store, StoreConfig

FRAME_SIZE = (1024, 768)


def sample_fields() -> list[np.ndarray]:
    paths = sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() == ".jpg")
    if not paths:
        raise FileNotFoundError(f"{SAMPLES_DIR}: no sample fields")
    return [read_rgb(p) for p in paths]


def eyepiece_frame(field: np.ndarray, size: tuple[int, int] = FRAME_SIZE, centre: tuple[int, int] = (530, 380),
                   radius: int = 330) -> np.ndarray:
    """A camera-through-eyepiece frame: ``field`` fills the square inscribed in a bright
    disc (mirrored out to the disc's edge), with a black vignette around the disc."""
    w, h = size
    inner = int(2 * radius / np.sqrt(2.0))
    pad = radius - inner // 2
    disc = cv2.copyMakeBorder(cv2.resize(field, (inner, inner), interpolation=cv2.INTER_CUBIC),
                              pad, 2 * radius - inner - pad, pad, 2 * radius - inner - pad, cv2.BORDER_REFLECT_101)
    frame = np.zeros((h, w, 3), np.uint8)
    x0, y0 = centre[0] - radius, centre[1] - radius
    frame[y0 : y0 + 2 * radius, x0 : x0 + 2 * radius] = disc
    outside = np.ones((h, w), np.uint8)
    cv2.circle(outside, centre, radius, 0, -1)
    frame[outside.astype(bool)] = (6, 5, 8)
    return frame


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 3), "p95": round(float(np.percentile(values, 95)), 3)}


def _time_ms(fn, items: list[np.ndarray], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        for item in items:
            t = time.perf_counter()
            fn(item)
            out.append((time.perf_counter() - t) * 1000.0)
    return out


def run_bench(pipeline: Pipeline, bundle: Bundle, repeats: int = 20) -> dict[str, Any]:
    cv2.setNumThreads(1)
    fields = sample_fields()
    small = [cv2.resize(f, (224, 224), interpolation=cv2.INTER_AREA) for f in fields]
    frames = [eyepiece_frame(f) for f in fields]
    params = bundle.segmentation
    report: dict[str, Any] = {
        "input": f"{len(frames)} sample fields as {FRAME_SIZE[0]}x{FRAME_SIZE[1]} eyepiece frames, {repeats} repeats",
        "backend": pipeline.backends.name,
        "segmentation_224_ms": _percentiles(_time_ms(lambda f: segment(f, params), small, repeats)),
        "cv2_kmeans_reference_224_ms": _percentiles(_time_ms(kmeans_threshold_reference, small, max(1, repeats // 4))),
    }
    with tempfile.TemporaryDirectory() as state:
        store = Store(Path(state), StoreConfig(min_free_mb=0))

        def analyse(frame: np.ndarray, reader: Pipeline = pipeline):
            """What the device does per field (``edge.device.service.Service.analyze``), without
            the device: evaluation never imports it. Storing is timed as a stage."""
            store.ensure_space()
            result = reader.process(frame, source="bench")
            start = time.perf_counter()
            store.save(result)
            result.timings_ms["store"] = (time.perf_counter() - start) * 1000.0
            return result

        analyse(frames[0])  # warm-up
        stages: dict[str, list[float]] = {}
        end_to_end: list[float] = []
        cpu_ms: list[float] = []  # CPU time of the process per field (every thread), not wall time
        cells: list[int] = []
        per_cell: list[float] = []
        invocations: list[float] = []
        views_adaptive: list[float] = []
        rejected = 0
        for _ in range(repeats):
            for frame in frames:
                counted = sum(v.fields for v in pipeline.backends.speed.values())
                cpu_start = time.process_time()
                t = time.perf_counter()
                result = analyse(frame)
                end_to_end.append((time.perf_counter() - t) * 1000.0)
                cpu_ms.append((time.process_time() - cpu_start) * 1000.0)
                invocations.append(float(sum(v.fields for v in pipeline.backends.speed.values()) - counted))
                rejected += not result.classified
                if result.views_read is not None:
                    views_adaptive.append(float(result.views_read))
                if result.cells:
                    cells.append(len(result.cells))
                    per_cell.append(result.timings_ms.get("inference", 0.0) / len(result.cells))
                for stage, ms in result.timings_ms.items():
                    stages.setdefault(stage, []).append(ms)
        if bundle.kind == "cells" and pipeline.views != "all":
            # issue 36's targets compare with every view read, in the same run on the same frames
            every = pipeline.reading_views("all")
            cpu_all, calls_all, views_all = [], [], []
            for _ in range(max(1, repeats // 4)):
                for frame in frames:
                    counted = sum(v.fields for v in pipeline.backends.speed.values())
                    cpu_start = time.process_time()
                    result = analyse(frame, every)
                    cpu_all.append((time.process_time() - cpu_start) * 1000.0)
                    calls_all.append(float(sum(v.fields for v in pipeline.backends.speed.values()) - counted))
                    views_all.append(float(result.views_read or 0))
            report["every_view"] = {"cpu_ms_per_field": _percentiles(cpu_all), "invocations_per_field": _percentiles(calls_all),
                                    "views_read_per_field": _percentiles(views_all),
                                    "views_read_adaptive": _percentiles(views_adaptive) if views_adaptive else None,
                                    "repeats": max(1, repeats // 4)}
        store.close()
    report["stages_ms"] = {k: _percentiles(v) for k, v in stages.items()}
    report["end_to_end_ms"] = _percentiles(end_to_end)
    report["fields_per_s"] = round(1000.0 / float(np.mean(end_to_end)), 1)
    # issue 36: model invocations per field (one a cell on the CPU since the views are batched,
    # a view each on the Edge TPU) and the CPU time a field costs
    report["invocations_per_field"] = _percentiles(invocations)
    report["cpu_ms_per_field"] = _percentiles(cpu_ms)
    inference = stages.get("inference", [0.0])
    # everything but inference against inference itself (the cells issue's speed target)
    report["inference_mean_ms"] = round(float(np.mean(inference)), 3)
    report["other_mean_ms"] = round(float(np.mean(end_to_end)) - float(np.mean(inference)), 3)
    if cells:
        report["cells_per_field"] = _percentiles([float(c) for c in cells])
        report["per_cell_inference_ms"] = _percentiles(per_cell)
    report["rejected"] = rejected
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    return report
