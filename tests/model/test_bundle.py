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
    assert bundle.appearance is not None and m["foreign_test"]["fields"] == len(m["split"]["keys"]["test"])
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


def test_unknown_format_version_is_refused(bundle_copy, test_key):
    from edge.model.signing import Trust

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="the signature does not match"):  # an edited manifest: refused first
        load_bundle(bundle_copy)
    from conftest import resign

    with pytest.raises(BundleError, match="format version 99 is not supported"):  # a signer's newer format
        load_bundle(resign(bundle_copy, test_key[0]), Trust((test_key[1],)))


def test_missing_manifest_and_missing_file_are_refused(bundle_copy, tmp_path):
    with pytest.raises(BundleError, match="no manifest"):
        load_bundle(tmp_path)
    (bundle_copy / "model.tflite").unlink()
    with pytest.raises(BundleError, match="listed in the manifest but missing"):
        load_bundle(bundle_copy)


def test_an_appearance_check_of_other_numbers_is_refused(bundle_copy):
    """A bundle whose appearance check names numbers this software does not measure (a newer
    converter, say) is refused on load, not run with its figures misread."""
    from converter.bundle import rewrite_bundle
    from edge.model.signing import Trust

    looks = load_bundle(bundle_copy).manifest["ood_appearance"]
    rewrite_bundle(bundle_copy, ood_appearance={**looks, "features": looks["features"][::-1]})
    with pytest.raises(BundleError, match="appearance check: features .* are not the ones this software measures"):
        load_bundle(bundle_copy, Trust(allow_unsigned=True))


def test_a_written_manifest_names_no_model_but_its_own(bundle_copy):
    """Reports a re-measure records (``evaluate``'s, ``shortcuts``') name the bundle they
    measured, which is the bundle before it was written: the written manifest must not carry
    that stale id beside its own."""
    from converter.bundle import rewrite_bundle
    from edge.model.signing import Trust

    shipped = load_bundle(bundle_copy).manifest
    metrics, shortcuts = shipped["metrics"], shipped["shortcuts_test"]
    stale = {**metrics, "int8_test": {**metrics["int8_test"], "model_id": "0123456789abcdef"}}
    rewrite_bundle(bundle_copy, metrics=stale, shortcuts_test={**shortcuts, "model_id": "0123456789abcdef"})
    text = (bundle_copy / "manifest.json").read_text()
    manifest = load_bundle(bundle_copy, Trust(allow_unsigned=True)).manifest
    assert text.count('"model_id"') == 1 and "0123456789abcdef" not in text
    assert manifest["shortcuts_test"] == {k: v for k, v in shortcuts.items() if k != "model_id"}
    assert manifest["metrics"]["int8_test"]["accuracy"] == metrics["int8_test"]["accuracy"]


def test_model_id_is_derived_from_the_content_and_never_taken_on_trust(bundle_copy, tmp_path):
    """A manifest edited after it was written (thresholds set to 1.0: every malignant field
    would be called negative) or an id that names a path is refused."""
    from edge.model.bundle import content_id

    from edge.model.signing import Trust

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    assert manifest["model_id"] == content_id(manifest) and manifest["model_id"].isalnum()
    assert "malignant_threshold" in manifest["calibration"]
    tampered = dict(manifest, calibration={**manifest["calibration"], "malignant_threshold": 1.0})
    (bundle_copy / "manifest.json").write_text(json.dumps(tampered))
    with pytest.raises(BundleError, match="the signature does not match manifest.json"):  # checked first
        load_bundle(bundle_copy)
    (bundle_copy / "manifest.sig").unlink()  # the id check on its own, as on a device that allows unsigned bundles
    unsigned = Trust(allow_unsigned=True)
    with pytest.raises(BundleError, match="does not match the manifest's content"):
        load_bundle(bundle_copy, unsigned)
    (bundle_copy / "manifest.json").write_text(json.dumps(dict(manifest, model_id="../../escaped_bundle")))
    with pytest.raises(BundleError, match="does not match the manifest's content"):
        load_bundle(bundle_copy, unsigned)
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text("[inference]\nallow_unsigned = true\n")
    r = run_cli("blastscope-edge", "model", "install", str(bundle_copy), "--state-dir", str(state), "--config", str(config))
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


def test_a_link_in_a_bundle_is_refused_and_unlisted_files_are_not_copied(bundle_copy, tmp_path, test_key):
    """The issue's stick: a listed file that is a link to /dev/zero would fill the disk."""
    import os

    from edge.device.modelstore import install_bundle
    from edge.model.signing import RELEASE_KEYS, Trust

    from conftest import resign

    trust = Trust(RELEASE_KEYS + (test_key[1],))
    (bundle_copy / "extra.bin").symlink_to("/dev/zero")  # not listed: never read, never copied
    bundle, _, _ = install_bundle(bundle_copy, tmp_path / "state", trust)
    installed = tmp_path / "state" / "models" / bundle.model_id
    assert sorted(p.name for p in installed.iterdir()) == sorted(
        ["manifest.json", "manifest.sig", "MODEL_CARD.md", *bundle.manifest["files"]])

    linked = tmp_path / "linked"
    linked.mkdir()
    for child in bundle_copy.iterdir():
        if child.name != "extra.bin":
            (linked / child.name).write_bytes(child.read_bytes())
    (linked / "zero.bin").write_bytes(b"\0" * 16)
    resign(linked, test_key[0], files={**bundle.manifest["files"], "zero.bin": ""})
    (linked / "zero.bin").unlink()
    os.symlink("/dev/zero", linked / "zero.bin")  # signed as a file; now a link
    with pytest.raises(BundleError, match="zero.bin: not a regular file; a bundle holds regular files only"):
        load_bundle(linked, trust)
    (linked / "manifest.sig").unlink()
    os.symlink("/dev/zero", linked / "manifest.sig")
    with pytest.raises(BundleError, match="manifest.sig: not a regular signature file"):
        load_bundle(linked, trust)


def test_the_model_card_is_covered_by_the_signature(bundle_copy, default_bundle):
    from edge.model.bundle import CARD_KEY, sha256_file

    manifest = json.loads((default_bundle / "manifest.json").read_text())
    assert manifest[CARD_KEY] == sha256_file(default_bundle / "MODEL_CARD.md")
    card = bundle_copy / "MODEL_CARD.md"
    card.write_text(card.read_text().replace("not a diagnosis", "a diagnosis"))
    with pytest.raises(BundleError, match=r"MODEL_CARD.md: sha256 .* does not match the manifest"):
        load_bundle(bundle_copy)


def test_an_unsigned_bundle_is_refused_before_any_file_is_hashed(bundle_copy, monkeypatch):
    from edge.model import bundle as bundle_module

    hashed = []
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.append(path) or "0")
    (bundle_copy / "manifest.sig").unlink()
    with pytest.raises(BundleError, match="the bundle is not signed"):
        load_bundle(bundle_copy)
    assert hashed == []


def test_a_bundle_larger_than_the_limit_is_refused_before_hashing(bundle_copy, monkeypatch):
    from edge.model import bundle as bundle_module

    hashed = []
    monkeypatch.setattr(bundle_module, "sha256_file", lambda path: hashed.append(path) or "0")
    monkeypatch.setattr(bundle_module, "MAX_BUNDLE_BYTES", 1024)
    with pytest.raises(BundleError, match="more than a bundle may"):
        load_bundle(bundle_copy)
    assert hashed == []
