"""Reference outputs: what a bundle's model must give on the shipped sample fields.

The converter records the int8 model's raw output for every sample field in the manifest
(so they are covered by its hash and signature). ``model install`` runs the same fields on
every backend present on the device and refuses the bundle when any output differs by more
than the backend's tolerance or names another class: a model that loads but computes
something else (a wrong runtime, a mis-compiled Edge TPU model, a broken delegate) never
goes live. Checking that outputs sum to one proves none of that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from edge import SAMPLES_DIR
from edge.analysis.imagefile import read_rgb
from edge.analysis.cells import cut_cells, detect_cells, measure_magnification, model_inputs as cell_inputs, working_scale
from edge.analysis.preprocess import field_and_segmentation, model_inputs

from edge.model.bundle import Bundle
from edge.model.inference import Backend

#: Largest allowed difference per class probability, in output steps of 1/256. CPU runtimes
#: differ on identical inputs (tflite-runtime 2.14 beside Debian 12's numpy against
#: ai-edge-litert 2.x; measured in tests/system/test_bookworm.py, figures in docs/converter.md),
#: and so does the Edge TPU's own arithmetic (not measured on hardware here). The class named by
#: every decisive output must also agree, and a wrong model or delegate is off by far more.
TOLERANCE = {"cpu": 32 / 256 + 1e-6, "edgetpu": 40 / 256 + 1e-6}


def sample_fields() -> list[Path]:
    return sorted(SAMPLES_DIR.glob("*.jpg"))


#: A cell bundle's fixed model inputs for the sample fields (the cell crops, as the converter
#: cut them): the reference check is about the model and its runtime, so it must not depend on
#: the OpenCV build that finds and cuts the cells (Debian 12's 4.10 cuts some cells a pixel
#: differently from a workstation's, and a pooled field output moved by 0.11 with it).
REFERENCE_INPUTS = "reference_inputs.npz"


def outputs(bundle: Bundle, backend: Backend, fields: Iterable[Path] | None = None) -> dict[str, list[float] | list[list[float]]]:
    """Raw probabilities per sample field: a field bundle's through the device pipeline's own
    preprocessing (no quality gate: the check is about the model, every field counts); a cell
    bundle's for each of its recorded cell crops (one row per cell)."""
    stored = np.load(bundle.root / REFERENCE_INPUTS) if bundle.kind == "cells" and \
        (bundle.root / REFERENCE_INPUTS).is_file() else None
    out: dict[str, list[float] | list[list[float]]] = {}
    for path in fields if fields is not None else sample_fields():
        if bundle.kind == "cells":  # one row per cell: the model's own outputs, before any pooling
            if stored is not None:
                crops = zip(stored[f"{path.name}:cell"], stored[f"{path.name}:cell_masked"])
            else:
                crops = zip(*cell_crops(bundle, read_rgb(path)))
            out[path.name] = [[round(float(p), 6) for p in backend.infer(a, b).probabilities] for a, b in crops]
        else:
            probabilities = backend.probabilities(*model_inputs(read_rgb(path), bundle.segmentation, backend.input_side))
            out[path.name] = [round(float(p), 6) for p in probabilities]
    return out


def cell_crops(bundle: Bundle, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A cell bundle's model inputs for a frame: every detected cell (no gate, no
    out-of-distribution check)."""
    params = bundle.cells
    assert params is not None
    field_rgb, seg = field_and_segmentation(frame, bundle.segmentation, int(bundle.manifest.get("field_side", 224)))
    px_per_um, _ = working_scale(measure_magnification(field_rgb, seg.mask, seg.element), params)
    cells, labels = detect_cells(seg, px_per_um, params)
    if not cells:
        raise ValueError("a reference field shows no white cell")
    return cell_inputs(cut_cells(field_rgb, labels, cells, px_per_um, params, seg.element))


def write_reference_inputs(bundle: Bundle, path: Path) -> None:
    """Cut the sample fields' cells once, where the bundle is made, and keep them."""
    arrays = {}
    for field in sample_fields():
        first, second = cell_crops(bundle, read_rgb(field))
        arrays[f"{field.name}:cell"], arrays[f"{field.name}:cell_masked"] = first, second
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its allow_pickle flag


def check(bundle: Bundle, backend: Backend) -> str:
    """Compare ``backend``'s outputs with the manifest's; returns a one-line summary, raises
    ``ValueError`` naming the field, the class and the difference when they disagree."""
    expected = bundle.manifest.get("reference_outputs", {}).get("fields")
    if not expected:
        raise ValueError("the manifest has no reference outputs (the bundle predates them); rebuild or re-sign it "
                         "with the current converter")
    tolerance = TOLERANCE[backend.name]
    fields = [SAMPLES_DIR / name for name in sorted(expected)]
    missing = [p.name for p in fields if not p.is_file()]
    if missing:
        raise ValueError(f"reference field(s) {', '.join(missing)} are not among this software's samples")
    worst = 0.0
    for name, got_rows in outputs(bundle, backend, fields).items():
        want_rows = np.atleast_2d(np.asarray(expected[name], dtype=np.float64))  # a cell bundle: one row per cell
        got_all = np.atleast_2d(np.asarray(got_rows, dtype=np.float64))
        if got_all.shape != want_rows.shape:
            raise ValueError(f"{backend.name}: on sample {name} the model gives {got_all.shape[0]} output rows, the "
                             f"manifest records {want_rows.shape[0]}")
        for got, want in zip(got_all, want_rows):
            diff = np.abs(got - want)
            top2 = np.sort(want)[-2:]
            decisive = top2[1] - top2[0] > 2 * tolerance  # a near-tie may flip within the tolerance
            if (decisive and int(np.argmax(got)) != int(np.argmax(want))) or diff.max() > tolerance:
                raise ValueError(f"{backend.name}: on sample {name} the model gives {[round(float(v), 3) for v in got]}, "
                                 f"the manifest records {[round(float(v), 3) for v in want]} (difference "
                                 f"{diff.max():.3f}, allowed {tolerance:.3f})")
            worst = max(worst, float(diff.max()))
    return f"{backend.name}: {len(fields)} reference fields match (largest difference {worst:.4f}, allowed {tolerance:.4f})"
