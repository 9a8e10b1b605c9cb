"""``blastscope-edge`` classify / evaluate / bench as a user runs them, on real images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import numpy as np

from edge.model.bundle import default_bundle_path, load_bundle
from edge.analysis.labels import LABELS

from conftest import FIELDS_THAT_MAY_MOVE, moved_fields, run_cli, sample_paths

REQUIRED = {"n", "accuracy", "per_class", "confusion", "malignant_sensitivity", "benign_specificity", "ms_per_field"}


def test_classify_samples_json():
    result = run_cli("blastscope-edge", "classify", "--json", *map(str, sample_paths()))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "not a diagnosis" in out["disclaimer"]
    assert len(out["results"]) == len(sample_paths())
    for r in out["results"]:
        assert r["classified"] and r["backend"] == "cpu"
        assert r["label"] in (*LABELS, "uncertain") and r["call"] in ("positive", "negative", "uncertain")
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-6
        assert {"field_of_view", "resize", "quality", "segmentation", "inference"} <= set(r["timings_ms"])


def test_classify_says_why_a_field_is_not_cleared_on_too_few_cells(tmp_path):
    """A real 10-cell benign field, with a copy of the shipped bundle that needs 11 cells to
    clear a field (unsigned: --allow-unsigned, as for a development bundle)."""
    import shutil

    from converter.bundle import rewrite_bundle
    from edge.analysis.screening import FEW_CELLS
    from edge.model.bundle import default_bundle_path

    ruled = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), ruled)
    rewrite_bundle(ruled, calibration={**load_bundle(default_bundle_path()).calibration.to_dict(), "min_cells_to_clear": 11})
    field = next(p for p in sample_paths() if p.name == "benign__WBC-Benign-182.jpg")
    result = run_cli("blastscope-edge", "classify", "--bundle", str(ruled), "--allow-unsigned", "--views", "all", str(field))
    assert result.returncode == 0, result.stderr
    assert f"{field}: uncertain; screening uncertain: {FEW_CELLS} (malignant probability 0.01)" in result.stdout


def test_classify_text_and_bad_files(tmp_path):
    bad = tmp_path / "scan.jpg"
    bad.write_bytes(b"not really a jpeg")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 250, np.uint8))
    missing = tmp_path / "nowhere.jpg"
    good = sample_paths()[0]
    result = run_cli("blastscope-edge", "classify", str(bad), str(good), str(blank), str(missing))
    assert result.returncode == 1
    assert f"{bad}: not a readable image" in result.stderr
    assert f"{missing}: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"{good}:" in result.stdout and "screening" in result.stdout
    assert f"{blank}: not classified: overexposed" in result.stdout
    assert "not a diagnosis" in result.stdout


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluate_matches_manifest(dataset_dir, default_bundle, split):
    """The figures the bundle records are what the device computes today: a change to the
    pipeline's numbers that moves a field across the band fails here until the bundle is
    refitted (``blastscope-convert refit``)."""
    result = run_cli("blastscope-edge", "evaluate", "--bundle", str(default_bundle), "--data", str(dataset_dir),
                     "--split", split, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert REQUIRED <= set(report)
    for label in LABELS:
        assert {"precision", "recall"} <= set(report["per_class"][label])
    recorded = load_bundle(default_bundle).manifest["metrics"][f"int8_{split}"]
    assert report["n"] == recorded["n"] == len(load_bundle(default_bundle).manifest["split"]["keys"][split])
    # within FIELDS_THAT_MAY_MOVE fields of the recorded figures: another CPU may round one field
    # on the band's edge the other way; more than that is a change of the pipeline's numbers
    assert moved_fields(report["confusion"], recorded["confusion"]) <= FIELDS_THAT_MAY_MOVE
    slack = FIELDS_THAT_MAY_MOVE / recorded["n"]
    for key in ("accuracy", "malignant_sensitivity", "benign_specificity"):
        assert abs(report[key] - recorded[key]) <= 4 * slack, key  # a rate over a class, not over all fields
    assert abs(report["uncertain"] - recorded["uncertain"]) <= FIELDS_THAT_MAY_MOVE
    # the spread over patient-proxy blocks: every field in one block, each block's calls add up,
    # and the benign side's share per block is what its rows say
    blocks = report["blocks"]
    assert sum(b["fields"] for b in blocks["per_block"]) == report["n"]
    for b in blocks["per_block"]:
        assert b["positive"] + b["negative"] + b["uncertain"] + b["refused"] == b["fields"]
    benign = [b for b in blocks["per_block"] if b["label"] == "benign"]
    assert blocks["spread"]["benign"]["blocks"] == len(benign) > 0
    assert blocks["spread"]["benign"]["lowest"] == min(round(b["negative"] / b["fields"], 4) for b in benign)
    # the ranking apart from the operating point: a good model ranks nearly every malignant field
    # above every benign one (the shipped bundle: AUC 0.99+ on both splits; room for another CPU)
    assert report["ranking"]["auc"] > 0.97 and report["ranking"]["fields"] == report["n"] - report["unclassified"]
    assert 0.0 <= report["ranking"]["benign_cleared_at_sensitivity"]["0.995"] <= 1.0


def test_evaluate_refuses_folder_without_classes(tmp_path):
    result = run_cli("blastscope-edge", "evaluate", "--data", str(tmp_path))
    assert result.returncode == 2 and "no folder for class" in result.stderr


def test_bench_prints_figures():
    result = run_cli("blastscope-edge", "bench", "--repeats", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["end_to_end_ms"]["p50"] > 0 and report["end_to_end_ms"]["p95"] >= report["end_to_end_ms"]["p50"]
    assert {"field_of_view", "resize", "quality", "segmentation", "inference", "screening", "store"} <= set(report["stages_ms"])
    assert report["rejected"] == 0  # every eyepiece frame was cropped and classified
    assert report["segmentation_224_ms"]["p50"] > 0 and report["peak_rss_mb"] > 0


def test_survey_reports_quality_figures(tmp_path):
    from edge.model.bundle import default_bundle_path, load_bundle
    from edge.pipeline import Pipeline

    limit = Pipeline.on_cpu(load_bundle(default_bundle_path())).limits.min_focus
    result = run_cli("blastscope-edge", "survey", str(sample_paths()[0].parent), "--blur", "5", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fields"] == len(sample_paths())
    sharp, blurred = report["figures"]["as is"]["focus"], report["figures"]["blurred sigma 5"]["focus"]
    assert sharp[0] > limit > blurred[-1]  # every sample passes the shipped gate, every blurred one fails it
    empty = run_cli("blastscope-edge", "survey", str(tmp_path))
    assert empty.returncode == 2 and "no images found" in empty.stderr


def test_users_command_adds_lists_and_changes_users_and_audits_it(tmp_path):
    state = ["--state-dir", str(tmp_path)]
    added = subprocess.run([str(Path(sys.executable).parent / "blastscope-edge"), "users", "add", "Tess", "--role",
                            "technician", "--pin-stdin", *state], input="135791\n", capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    assert "Tess: technician, active" in added.stdout and "API token " in added.stdout
    short = subprocess.run([str(Path(sys.executable).parent / "blastscope-edge"), "users", "add", "Bo", "--pin-stdin",
                            *state], input="123\n", capture_output=True, text=True, timeout=120)
    assert short.returncode == 2 and "users.db" in short.stderr and "6 to 12 digits" in short.stderr
    changed = run_cli("blastscope-edge", "users", "set", "Tess", "--role", "reviewer", "--active", "no", *state)
    assert changed.returncode == 0 and "Tess: reviewer, inactive" in changed.stdout
    listed = run_cli("blastscope-edge", "users", "list", *state)
    assert listed.stdout.splitlines() == ["Tess\treviewer\tinactive"]
    from edge.device.config import load_config
    from edge.record.store import Store

    store = Store(tmp_path, load_config(None, environ={}, overrides={"store.state_dir": str(tmp_path)}).store)
    try:
        actions = [a["action"] for a in store.audit_log(10)]
    finally:
        store.close()
    assert "user.add" in actions and "user.set" in actions


def test_site_reference_fit_and_classify_with_it(tmp_path):
    """Issue 33: ``site-reference fit`` on a folder of known-negative slides (one sub-folder
    each) writes a reference that ``classify --site-reference`` reads; too few slides, a
    missing folder and a file that is not a reference each get a message naming the problem."""
    from edge.evaluation.shortcuts import load_field, restained

    bundle = load_bundle(default_bundle_path())
    benign = [p for p in sample_paths() if p.name.startswith("benign")]
    data = tmp_path / "slides"
    rng = np.random.default_rng(3)
    for i in range(10):  # ten "slides": the benign samples in slightly different stains
        (data / f"slide-{i + 1:02d}").mkdir(parents=True)
        for path in benign:
            field = load_field(path, "benign", bundle.segmentation)
            lab = cv2.cvtColor(field.rgb, cv2.COLOR_RGB2LAB)[field.mask].astype(float)
            rgb = restained(field, lab.mean(0) + rng.normal(0, 3, 3), lab.std(0))
            cv2.imwrite(str(data / f"slide-{i + 1:02d}" / path.name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "site.json"
    result = run_cli("blastscope-edge", "site-reference", "fit", "--data", str(data), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "10 slides" in result.stdout and "leave one slide out" in result.stdout
    reference = json.loads(out.read_text())
    assert reference["kind"] == "blastscope-site-reference" and reference["model_id"] == bundle.model_id
    result = run_cli("blastscope-edge", "classify", "--site-reference", str(out), str(sample_paths()[0]))
    assert result.returncode == 0, result.stderr

    few = tmp_path / "few"
    (few / "one").mkdir(parents=True)
    result = run_cli("blastscope-edge", "site-reference", "fit", "--data", str(few), "--out", str(tmp_path / "x.json"))
    assert result.returncode != 0 and "at least 10 known-negative slides" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("blastscope-edge", "site-reference", "fit", "--data", str(tmp_path / "nowhere"), "--out", str(out))
    assert result.returncode != 0 and "nowhere: not a folder" in result.stderr
    (tmp_path / "bad.json").write_text("[1, 2]")
    result = run_cli("blastscope-edge", "classify", "--site-reference", str(tmp_path / "bad.json"), str(sample_paths()[0]))
    assert result.returncode != 0 and "bad.json: not a usable site reference" in result.stderr


def test_a_migration_keeps_the_record_as_it_was_and_rollback_returns_to_it(tmp_path):
    """Issue 36: nothing kept the record before a migration, and the old release on a migrated
    record died at every start under systemd. Opening a schema-2 record copies it first; ``record
    rollback`` restores that copy and keeps the migrated record aside; a release that finds a
    newer schema exits 78 (the unit does not restart on it) with what to do, no traceback."""
    import sqlite3

    from edge.record.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION, statements

    state = tmp_path / "state"
    (state / "images").mkdir(parents=True)
    db = sqlite3.connect(state / "results.db", isolation_level=None)
    db.executescript(SCHEMA)
    for statement in statements(MIGRATIONS[2]):  # what release 0.2 created
        db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO results(created, status, label, call, image, overlay, data, run_seconds) VALUES "
               "(1700000000, 'classified', 'pre_b', 'positive', 'a.jpg', 'a_overlay.jpg', '{\"label\": \"pre_b\"}', 5)")
    db.close()
    for name in ("a.jpg", "a_overlay.jpg"):
        (state / "images" / name).write_bytes(b"jpeg")

    opened = run_cli("blastscope-edge", "record", "accept-new", "--state-dir", str(state))  # opens: migrates
    assert opened.returncode == 0, opened.stderr
    backups = list(state.glob("results.db.before-schema-2-*"))
    assert len(backups) == 1

    def version_and_rows(path):
        with sqlite3.connect(path) as c:
            return c.execute("PRAGMA user_version").fetchone()[0], c.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    assert version_and_rows(backups[0]) == (2, 1) and version_and_rows(state / "results.db") == (SCHEMA_VERSION, 1)

    back = run_cli("blastscope-edge", "record", "rollback", "--state-dir", str(state))
    assert back.returncode == 0 and "start the older release now" in back.stdout, back.stderr
    assert version_and_rows(state / "results.db") == (2, 1)
    aside = [p for p in state.glob("results.db.rolled-back-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1 and version_and_rows(aside[0]) == (SCHEMA_VERSION, 1)

    with sqlite3.connect(state / "results.db") as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")  # as a newer release leaves it
    newer = subprocess.run([str(Path(sys.executable).parent / "blastscope-edge"), "serve", "--demo", "--port", "0",
                            "--state-dir", str(state)], capture_output=True, text=True, timeout=120)
    assert newer.returncode == 78, newer.stderr
    assert "is newer than this software" in newer.stderr and "record rollback" in newer.stderr
    assert "Traceback" not in newer.stderr
