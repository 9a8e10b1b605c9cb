"""The site check (issue 32): can a linear probe tell the two sites apart among cells of one kind?

pbc-normal's lymphocytes come from Barcelona, all-pbs-224's benign lymphoid cells (hematogones)
from Tehran, and every blast the model ever saw is Tehran's. A model that learnt "Barcelona
look = normal" would read a Tehran-looking lymphocyte as a blast. So among benign lymphoid
cells of both sites, a logistic regression on the model's embedding (the 64 numbers before
its softmax) is fitted to tell the site, and its cross-validated ROC AUC reported: 0.5 means
the embedding carries nothing of the site, 1.0 that it separates them. The same probe on the
raw grey crops (the model's first input, 24x24) is the baseline: what the data alone gives
away. Target: embedding AUC <= 0.75 (the raw crops gave 0.97 before the differential).

Only cells of the validation and test splits are used (never the training cells), each site's
cells cut as the device cuts them (``edge.evaluation.pbc`` for pbc-normal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edge.analysis.cells import CellCrops, cut_cells, detect_cells, measure_magnification, model_inputs, working_scale
from edge.analysis.imagefile import read_rgb
from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import segment
from edge.evaluation.metrics import auc
from edge.evaluation.pbc import PBC_PX_PER_UM, centre_cell, degrade, pbc_files
from edge.model.bundle import Bundle
from edge.pipeline import Pipeline

TARGET_AUC = 0.75


def logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 300) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by gradient descent on standardised features."""
    w, b = np.zeros(x.shape[1]), 0.0
    rate = 0.5
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        gw = x.T @ (p - y) / len(y) + l2 * w / len(y)
        gb = float(np.mean(p - y))
        w, b = w - rate * gw, b - rate * gb
    return w, b


def probe_auc(features: np.ndarray, site: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUC of a linear probe telling ``site`` (0/1) from ``features``."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(site)) % folds
    scores = np.zeros(len(site))
    for k in range(folds):
        train, test = fold != k, fold == k
        mean, std = features[train].mean(0), features[train].std(0) + 1e-6
        w, b = logistic_fit((features[train] - mean) / std, site[train].astype(float))
        scores[test] = ((features[test] - mean) / std) @ w + b
    return auc(scores, site)


def _allpbs_lymphoid(bundle: Bundle, samples: list) -> CellCrops:
    """The white cells of benign all-pbs-224 fields, cut as the device cuts them."""
    params, seg = bundle.cells, bundle.segmentation
    assert params is not None
    parts = []
    for sample in samples:
        field = normalise(read_rgb(sample.path)).rgb
        segmentation = segment(field, seg)
        px, reason = working_scale(measure_magnification(field, segmentation.mask, seg.element), params)
        if reason:
            continue
        cells, labels = detect_cells(segmentation, px, params)
        if cells:
            parts.append(cut_cells(field, labels, cells, px, params, seg.element))
    return CellCrops(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("rgb", "own", "near")))


def _pbc_lymphocytes(bundle: Bundle, root: Path, limit: int) -> CellCrops:
    params = bundle.cells
    assert params is not None
    parts = []
    for path, label, split in pbc_files(root):
        if label != "benign" or split == "train":
            continue
        crops = centre_cell(degrade(read_rgb(path), PBC_PX_PER_UM, params.model_px_per_um), bundle.segmentation, params)
        if crops is not None:
            parts.append(crops)
        if len(parts) == limit:
            break
    return CellCrops(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("rgb", "own", "near")))


def run(pipeline: Pipeline, benign_fields: list, pbc_root: Path, limit: int = 400,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """The site check on ``benign_fields`` (all-pbs-224, not training) against pbc-normal's
    validation and test lymphocytes, at most ``limit`` cells a site."""
    bundle = pipeline.bundle
    tehran = _allpbs_lymphoid(bundle, benign_fields)
    barcelona = _pbc_lymphocytes(bundle, pbc_root, limit)
    n = min(len(tehran), len(barcelona), limit)
    rng = np.random.default_rng(0)
    pick_t, pick_b = rng.permutation(len(tehran))[:n], rng.permutation(len(barcelona))[:n]
    crops = CellCrops(*(np.concatenate([getattr(tehran, k)[pick_t], getattr(barcelona, k)[pick_b]])
                        for k in ("rgb", "own", "near")))
    site = np.r_[np.zeros(n), np.ones(n)]
    first, second = model_inputs(crops)
    rows = [pipeline.backends.infer(a, b)[0].embedding for a, b in zip(first, second)]
    if any(r is None for r in rows):
        raise ValueError(f"{bundle.root}: the model gives no embedding: the site check needs one")
    embedding = np.stack([r for r in rows if r is not None])
    raw = np.stack([cv2.resize(a[..., 0], (24, 24), interpolation=cv2.INTER_AREA).ravel() for a in first]).astype(float)
    embedding_auc = round(probe_auc(embedding, site), 4)
    report: dict[str, Any] = {"cells_per_site": int(n), "embedding_auc": embedding_auc,
              "raw_crop_auc": round(probe_auc(raw, site), 4), "target_auc": TARGET_AUC,
              "cells": "benign lymphoid cells: all-pbs-224 benign fields of the split against pbc-normal lymphocytes "
                       "of its validation and test images (split by image)"}
    report["passes"] = embedding_auc <= TARGET_AUC
    log(f"site check: linear probe AUC on the embedding {report['embedding_auc']:.3f} (target <= {TARGET_AUC}), "
        f"on the raw grey crops {report['raw_crop_auc']:.3f}, {n} cells a site")
    return report
