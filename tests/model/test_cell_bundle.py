"""The shipped cell bundle through the device pipeline, on real fields: cells are read one by
one, a field with no white cell or at the wrong magnification is refused, cells unlike the
training cells are refused, and the benign capture conditions still pass."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import BENIGN
from edge.evaluation.degradation import blur, gain, jpeg
from edge.evaluation.shortcuts import load_field, without_cells
from edge.model.bundle import default_bundle_path, load_bundle
from edge.model.ood import OUT_OF_DISTRIBUTION
from edge.pipeline import Pipeline

from conftest import sample_paths


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    bundle = load_bundle(default_bundle_path())
    if bundle.kind != "cells":
        pytest.fail(f"the shipped bundle {bundle.model_id} is a {bundle.kind} bundle, not the cell model")
    return Pipeline.on_cpu(bundle, threads=1)


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_every_sample_is_read_cell_by_cell(pipeline, path):
    result = pipeline.process(read_rgb(path), source=str(path))
    record = result.to_dict()
    assert result.classified, result.reasons
    assert result.cells and record["white_cells"] + record["unfamiliar_cells"] == len(result.cells)
    assert record["white_cells"] > len(result.cells) / 2  # most of a training-site field is familiar
    truth = path.name.split("__")[0]
    if truth == BENIGN:
        assert record["call"] != "positive", record["malignant_probability"]
    else:  # a malignant field is never called negative: positive, or uncertain for a human read
        assert record["call"] in ("positive", "uncertain") and record["blasts"] >= 1, record


@pytest.mark.parametrize("path", sample_paths()[::2], ids=lambda p: p.name)
def test_a_field_with_its_white_cells_removed_is_refused_not_classified(pipeline, path):
    field = load_field(path, "x", pipeline.bundle.segmentation)
    result = pipeline.process(without_cells(field), source="leukocyte-free")
    assert not result.classified and result.reasons[0].startswith("no white cells in view"), result.reasons


def test_a_wrong_objective_is_refused(pipeline):
    rgb = read_rgb(next(p for p in sample_paths() if "Pro-326" in p.name))
    h, w = rgb.shape[:2]
    big = cv2.resize(rgb, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)[3 * h // 2:5 * h // 2, 3 * w // 2:5 * w // 2]
    result = pipeline.process(np.ascontiguousarray(big), source="100x")
    assert not result.classified and result.reasons[0].startswith(("wrong magnification", "magnification cannot")), \
        result.reasons


def _foreign(rgb: np.ndarray, params) -> np.ndarray:
    """Cells unlike any the model was trained on: every white cell's inside replaced by a
    coarse stripe pattern in the stain's colours (what a badly precipitated stain or another
    preparation can look like), the smear around it untouched."""
    field = load_field_from(rgb, params)
    out = rgb.copy()
    yy, xx = np.indices(rgb.shape[:2])
    stripes = ((xx + yy) // 3) % 2 == 0
    dark = np.array([60, 20, 110], np.uint8)
    light = np.array([235, 225, 245], np.uint8)
    out[field & stripes] = dark
    out[field & ~stripes] = light
    return out


def load_field_from(rgb: np.ndarray, params) -> np.ndarray:
    from edge.analysis.normalisation import normalise
    from edge.analysis.segmentation import segment

    return segment(normalise(rgb).rgb, params).mask


def test_foreign_looking_cells_are_refused_with_what_to_do(pipeline):
    refused = 0
    for path in sample_paths():
        result = pipeline.process(_foreign(read_rgb(path), pipeline.bundle.segmentation), source="foreign")
        if result.cells is not None and not result.classified:
            assert result.reasons == [OUT_OF_DISTRIBUTION]
            refused += 1
        elif result.cells:
            assert not any(c.familiar for c in result.cells) or result.classified
    assert refused >= 6, refused
    assert "check the stain, the objective and the camera" in OUT_OF_DISTRIBUTION


@pytest.mark.parametrize("name, condition", [
    ("warm", lambda f: gain(f, 1.12, 1.0, 0.85)), ("cool", lambda f: gain(f, 0.88, 1.0, 1.15)),
    ("JPEG 50", lambda f: jpeg(f, 50)), ("defocus 1", lambda f: blur(f, 1.0)), ("dimmer", lambda f: gain(f, .75, .75, .75))])
def test_benign_capture_conditions_pass_the_out_of_distribution_check(pipeline, name, condition):
    for path in sample_paths():
        result = pipeline.process(condition(read_rgb(path)), source=name)
        assert result.reasons != [OUT_OF_DISTRIBUTION], (path.name, name)
        if result.cells:
            assert sum(c.familiar for c in result.cells) >= len(result.cells) / 2
