"""``python -m tools.seeds_bench``: BlastScope's field against the seeds' method, in one run on
the same fields, one thread each (issue 36's target: at least 3x faster per field).

The seeds' method, as the systems this project grew from ran it: the field resized to 224 px,
segmented by iterative ``cv2.kmeans`` (k=2) on its CIE-LAB pixels, and read by a float Keras
dual-input MobileNetV2 (the field and its mask, two towers, one ``predict`` per field). Its
weights do not change its speed: ``--weights`` (the ImageNet no-top file) is loaded when given,
else the towers keep their random start. BlastScope's field is the device pipeline on the CPU
(``Pipeline.process``: field of view, gate, segmentation, cells, int8 reads as the device reads
them (adaptive views), the call). A developer tool (TensorFlow is the converter's): not installed on a device.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np


def _seeds_model(weights: Path | None):
    import keras

    def tower(name: str):
        net = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, weights=None,
                                             pooling="avg", name=name)
        if weights:
            net.load_weights(weights)
        return net

    field, mask = keras.Input((224, 224, 3)), keras.Input((224, 224, 3))
    joined = keras.layers.Concatenate()([tower("field_tower")(field), tower("mask_tower")(mask)])
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.Dense(128, activation="relu")(joined))
    return keras.Model([field, mask], out)


def _seeds_inputs(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The seeds' preprocessing: 224 px, k-means (k=2) on LAB, the cluster with the higher a*
    (the stained nuclei) as the mask."""
    small = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    _, labels, centres = cv2.kmeans(lab, 2, None, criteria, 3, cv2.KMEANS_PP_CENTERS)  # type: ignore[call-overload]
    mask = (labels.ravel() == int(np.argmax(centres[:, 1]))).reshape(224, 224).astype(np.float32)
    x = small.astype(np.float32) / 127.5 - 1.0
    return x[None], np.repeat(mask[..., None], 3, axis=2)[None] * 2.0 - 1.0


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.seeds_bench", description=__doc__)
    ap.add_argument("--fields", type=Path, help="a folder of field images (default: the shipped sample fields)")
    ap.add_argument("--weights", type=Path, help="MobileNetV2 ImageNet no-top weights for the seeds' towers")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cv2.setNumThreads(1)

    from edge import SAMPLES_DIR
    from edge.analysis.imagefile import read_rgb
    from edge.model.bundle import default_bundle_path, load_bundle
    from edge.pipeline import Pipeline

    folder = args.fields or SAMPLES_DIR
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        print(f"error: {folder}: no field images")
        return 2
    fields = [read_rgb(p) for p in paths]
    model = _seeds_model(args.weights)
    from edge.model.inference import InferenceConfig

    # the device's reading (inference.views, adaptive by default), not the converter's every view
    pipeline = Pipeline.on_cpu(load_bundle(default_bundle_path()), threads=1, views=InferenceConfig().views)
    model.predict(list(_seeds_inputs(fields[0])), verbose=0)  # warm-up, both
    pipeline.process(fields[0], source="bench")
    seeds, ours = [], []
    for _ in range(args.repeats):
        for rgb in fields:
            t = time.perf_counter()
            model.predict(list(_seeds_inputs(rgb)), verbose=0)
            seeds.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            pipeline.process(rgb, source="bench")
            ours.append((time.perf_counter() - t) * 1000)
    report = {"fields": len(fields), "repeats": args.repeats, "threads": 1,
              "seeds_ms_per_field": _percentiles(seeds), "blastscope_ms_per_field": _percentiles(ours),
              "blastscope_speedup_p50": round(float(np.median(seeds) / np.median(ours)), 2),
              "model": pipeline.bundle.model_id, "seeds_weights": str(args.weights) if args.weights else "random"}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(fields)} fields x {args.repeats}, one thread each: seeds' method (cv2.kmeans LAB, float Keras dual "
              f"MobileNetV2 at 224 px) p50 {report['seeds_ms_per_field']['p50']} ms, p95 "
              f"{report['seeds_ms_per_field']['p95']} ms; BlastScope (model {report['model']}, int8, CPU) p50 "
              f"{report['blastscope_ms_per_field']['p50']} ms, p95 {report['blastscope_ms_per_field']['p95']} ms; "
              f"BlastScope {report['blastscope_speedup_p50']}x the seeds' speed (target >= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
