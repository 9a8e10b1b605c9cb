"""The shipped cell bundle through the device pipeline, on real fields: cells are read one by
one, a field with no white cell or at the wrong magnification is refused, cells unlike the
training cells are refused, and the benign capture conditions still pass."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import BENIGN
from edge.evaluation.degradation import blur, gain, inverted_cells, jpeg
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


@pytest.mark.parametrize("name", ["Pre/WBC-Malignant-Pre-001.jpg", "Pro/WBC-Malignant-Pro-046.jpg",
                                  "Early/WBC-Malignant-Early-290.jpg"])
def test_a_malignant_field_with_one_or_two_white_cells_is_read_not_refused(pipeline, dataset_dir, name):
    """Training-split fields whose first a* split is background against red cells: the shipped
    bundle splits again (``segmentation.resplit``) and reads their few cells."""
    assert pipeline.bundle.segmentation.resplit
    record = pipeline.process(read_rgb(dataset_dir / name), source=name).to_dict()
    assert record["status"] == "classified", record["reasons"]
    assert 1 <= record["white_cells"] <= 3 and record["call"] in ("positive", "uncertain"), record


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
    # refused, never read: an enlarged 224 px field is also soft, so the gate may refuse it first
    assert not result.classified and result.reasons[0].startswith(
        ("wrong magnification", "magnification cannot", "out of focus")), result.reasons


def test_foreign_looking_cells_are_refused_with_what_to_do(pipeline):
    """Every white cell's lightness inverted, colour untouched: the embedding check passes
    such cells, the appearance check refuses the field and the record says how far it was."""
    refused = 0
    for path in sample_paths():
        result = pipeline.process(inverted_cells(read_rgb(path), pipeline.bundle.segmentation))
        record = result.to_dict()
        if not result.classified and result.reasons == [OUT_OF_DISTRIBUTION]:
            refused += 1
            assert record["appearance_distance"] > pipeline.bundle.appearance.limit
            assert record["cells"] and all("appearance_distance" in c for c in record["cells"])
    assert refused >= 6, refused


def test_cells_beyond_the_limit_are_left_out_and_a_field_of_them_is_refused(pipeline):
    """The mechanism, with the limit set between this field's cells' distances: the far cells
    are shown as not recognised and left out of the call; with the limit below all of them the
    field is refused with what to do."""
    import dataclasses

    rgb = read_rgb(next(p for p in sample_paths() if "Pre-375" in p.name))
    distances = sorted(c.distance for c in pipeline.process(rgb).cells)
    for limit, refused in ((distances[len(distances) // 4], True), (distances[-2], False)):
        ood = dataclasses.replace(pipeline.bundle.ood, limit=limit)
        bundle = dataclasses.replace(pipeline.bundle, manifest={**pipeline.bundle.manifest, "ood": ood.to_dict()})
        result = Pipeline(bundle, pipeline.backends).process(rgb)
        record = result.to_dict()
        assert record["unfamiliar_cells"] == sum(d > round(limit, 4) for d in distances)
        assert (result.reasons == [OUT_OF_DISTRIBUTION]) is refused and result.classified is not refused
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


def test_a_field_cleared_on_fewer_cells_than_the_rule_is_uncertain_on_the_page_and_in_the_figures(pipeline):
    """The count rule on a real benign field read from 10 recognised cells: with a rule of 11
    it is shown uncertain with the reason, with 10 it is cleared; and ``evaluate`` scores the
    call the device shows, so its figures follow the rule too."""
    import dataclasses

    from edge.analysis.screening import FEW_CELLS
    from edge.evaluation.dataset import Sample
    from edge.evaluation.evaluate import classify_samples, field_records

    path = next(p for p in sample_paths() if p.name == "benign__WBC-Benign-182.jpg")
    samples = [Sample(p, p.name.split("__")[0]) for p in sample_paths()]
    for count, call in ((11, "uncertain"), (10, "negative")):
        bundle = dataclasses.replace(pipeline.bundle, calibration=dataclasses.replace(
            pipeline.bundle.calibration, min_cells_to_clear=count))
        ruled = Pipeline.on_cpu(bundle, threads=1)
        record = ruled.process(read_rgb(path), source=str(path)).to_dict()
        assert record["white_cells"] == 10
        assert (record["call"], record["call_reason"]) == (call, FEW_CELLS if call == "uncertain" else None)
        shown = [ruled.process(read_rgb(s.path)).screening for s in samples]
        assert [r["call"] for r in field_records(bundle, classify_samples(ruled, samples))] == [s.call for s in shown]
