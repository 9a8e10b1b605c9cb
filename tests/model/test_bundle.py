"""The shipped bundle loads and verifies; damaged or foreign bundles are refused clearly."""

from __future__ import annotations

import json

import pytest

from edge.model.bundle import FORMAT_VERSION, BundleError, load_bundle
from edge.analysis.labels import LABELS

from conftest import run_cli, sample_paths


def test_shipped_bundle_is_complete(default_bundle):
    bundle = load_bundle(default_bundle)
    m = bundle.manifest
    assert m["format_version"] == FORMAT_VERSION and m["labels"] == list(LABELS)
    assert m["kind"] == "cells" and bundle.cells is not None and bundle.ood is not None  # reads cells, not fields
    assert {i["name"] for i in m["inputs"]} == {"cell", "cell_masked"}
    for spec in m["inputs"]:
        assert spec["shape"] == [1, 96, 96, 3] and spec["dtype"] == "uint8"
    assert m["output"]["shape"] == [1, 4]
    assert {"train", "val", "test"} == set(m["split"]["keys"])
    assert len(m["metrics"]["int8_test"]["confusion"]) == 4
    assert m["edgetpu_check"]["ok"] is True
    assert {"leukocyte_free", "swap", "restain", "colour_only"} <= set(m["shortcuts_test"])
    assert m["calibration"]["uncertain_high"] > m["calibration"]["uncertain_low"]  # an uncertain band with width
    card = (default_bundle / "MODEL_CARD.md").read_text()
    assert "not a diagnosis" in card and "95% CI" in card and "10.34740/KAGGLE/DSV/2175623" in card
    assert "Shortcut tests" in card and "leukocyte-free" in card and "Validated on one site's images only" in card


def test_shipped_samples_are_from_the_test_split(default_bundle):
    test_keys = set(load_bundle(default_bundle).manifest["split"]["keys"]["test"])
    for path in sample_paths():
        label, name = path.name.split("__", 1)
        assert f"{label}/{name}" in test_keys, path.name


def test_tampered_model_is_refused(bundle_copy):
    model = bundle_copy / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.tflite: sha256 .* does not match the manifest"):
        load_bundle(bundle_copy)
    result = run_cli("blastscope-edge", "classify", "--bundle", str(bundle_copy), str(sample_paths()[0]))
    assert result.returncode == 2 and "does not match the manifest" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_format_version_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99 is not supported"):
        load_bundle(bundle_copy)


def test_missing_manifest_and_missing_file_are_refused(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="no manifest"):
        load_bundle(tmp_path)
    (bundle_copy / "model.tflite").unlink()
    with pytest.raises(BundleError, match="listed in the manifest but missing"):
        load_bundle(bundle_copy)


def test_model_id_is_derived_from_the_content_and_never_taken_on_trust(bundle_copy, tmp_path):
    """A manifest edited after it was written (thresholds set to 1.0: every malignant field
    would be called negative) or an id that names a path is refused."""
    from edge.model.bundle import content_id

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    assert manifest["model_id"] == content_id(manifest) and manifest["model_id"].isalnum()
    tampered = dict(manifest, calibration={**manifest["calibration"], "threshold": 1.0})
    (bundle_copy / "manifest.json").write_text(json.dumps(tampered))
    with pytest.raises(BundleError, match="does not match the manifest's content"):
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.json").write_text(json.dumps(dict(manifest, model_id="../../escaped_bundle")))
    with pytest.raises(BundleError, match="does not match the manifest's content"):
        load_bundle(bundle_copy)
    state = tmp_path / "state"
    r = run_cli("blastscope-edge", "model", "install", str(bundle_copy), "--state-dir", str(state))
    assert r.returncode == 2 and "does not match the manifest's content" in r.stderr
    assert not (tmp_path / "escaped_bundle").exists() and not (state / "models" / "current").exists()


def test_a_bundle_loaded_through_current_stays_the_one_verified(tmp_path, default_bundle):
    """The daemon resolves ``current`` once: a later ``model install`` cannot swap the files
    under a running daemon's Edge TPU re-probe."""
    import os
    import shutil

    models = tmp_path / "models"
    shutil.copytree(default_bundle, models / "a")
    os.symlink("a", models / "current")
    bundle = load_bundle(models / "current")
    os.replace(models / "current", models / "old")
    os.symlink("b", models / "current")
    assert bundle.root == (models / "a").resolve() and bundle.cpu_model == (models / "a" / "model.tflite").resolve()
