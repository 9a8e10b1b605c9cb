"""The real converter path end to end on a tiny real subset: one short epoch per phase,
real ImageNet weights, real int8 conversion, real bundle, evaluated by the edge runtime."""

from __future__ import annotations

import json

from edge.model.bundle import load_bundle
from edge.evaluation.dataset import load_dataset
from edge.model.signing import Trust

from conftest import run_cli, sample_paths, tiny_dataset


def test_build_tiny_bundle_and_evaluate_it(tmp_path, dataset_dir, weights_path):
    data = tiny_dataset(tmp_path / "data", per_class=6)
    (data / "Pre" / "readme.txt").write_text("stray file")
    out = tmp_path / "bundle"
    result = run_cli("blastscope-convert", "build", "--data", str(data), "--weights", str(weights_path),
                     "--out", str(out), "--head-epochs", "1", "--finetune-epochs", "1", "--batch-size", "8",
                     "--block-size", "10", "--representative-size", "8", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "readme.txt: not an image file" in result.stdout
    assert "[head] epoch 1/1" in result.stdout and "eta" in result.stdout
    assert "Result: PASS" in result.stdout
    assert "not signed: a device runs it only after" in result.stdout
    bundle = load_bundle(out, Trust(allow_unsigned=True))
    m = bundle.manifest
    assert set(m["metrics"]) == {"float_val", "int8_val", "float_test", "int8_test", "cases_test"}
    assert [c["size"] for c in m["metrics"]["cases_test"]] == [1, 3, 5, 10] and m["case_rule"]["min_fields"] >= 2
    split_keys = [k for keys in m["split"]["keys"].values() for k in keys]
    assert sorted(split_keys) == sorted(s.key for s in load_dataset(data).samples)
    assert m["segmentation"] and m["calibration"]["temperature"] > 0
    assert m["edgetpu"]["compiled"] in (True, False) and m["edgetpu"]["summary"]
    assert sorted(m["reference_outputs"]["fields"]) == sorted(p.name for p in sample_paths())
    # gate limits fitted from the ladders, and the device pipeline applies them
    limits = m["quality_gate"]["limits"]
    assert set(limits) >= {"min_focus", "max_noise", "max_clipped", "max_border"}
    assert limits["max_noise"] > m["quality_gate"]["clean"]["max_noise"]
    assert [row["level"] for row in m["quality_gate"]["ladders"]["defocus sigma"]][:2] == [0.0, 0.5]
    from edge.pipeline import Pipeline
    assert Pipeline.on_cpu(bundle).limits.min_focus == limits["min_focus"]
    assert len(m["robustness_test"]["conditions"]) == 19
    # the device applies the bagged thresholds (a bootstrap mean; with few validation fields it
    # may lie outside the 5th-95th percentile range, so that is not asserted)
    fit = m["calibration_fit"]["int8"]
    sens, spec, cal = fit["sensitivity_threshold"], fit["specificity_threshold"], m["calibration"]
    assert sens["range_90"][0] <= sens["range_90"][1] and spec["range_90"][0] <= spec["range_90"][1]
    if sens["bagged"] < spec["bagged"]:
        assert (cal["uncertain_low"], cal["uncertain_high"]) == (sens["bagged"], spec["bagged"])
    else:
        assert cal["malignant_threshold"] == round((sens["bagged"] + spec["bagged"]) / 2, 6)
    card = (out / "MODEL_CARD.md").read_text()
    for heading in ("## Quality gate", "## Capture conditions (test split)", "not been validated on any other laboratory",
                    "fixed schedule"):
        assert heading in card, heading

    refused = run_cli("blastscope-edge", "evaluate", "--bundle", str(out), "--data", str(data), "--json")
    assert refused.returncode == 2 and "the bundle is not signed" in refused.stderr
    evaluated = run_cli("blastscope-edge", "evaluate", "--bundle", str(out), "--data", str(data), "--json",
                        "--allow-unsigned")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "unsigned bundle, measured on request" in evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["confusion"] == m["metrics"]["int8_test"]["confusion"]


def test_build_reports_bad_weights_path(tmp_path, dataset_dir):
    result = run_cli("blastscope-convert", "build", "--data", str(dataset_dir), "--weights", str(tmp_path / "no.h5"),
                     "--out", str(tmp_path / "b"))
    assert result.returncode == 2 and "no.h5: weights file not found" in result.stderr
