"""``blastscope-edge robustness`` on real test fields: conditions reach the device pipeline,
scores are of the label shown, rejections are counted by reason, runs are reproducible."""

from __future__ import annotations

import pytest

import json

from conftest import run_cli


def _run(default_bundle, dataset_dir, *conditions: str) -> dict:
    args = [a for c in conditions for a in ("--condition", c)]
    r = run_cli("blastscope-edge", "robustness", "--bundle", str(default_bundle), "--data", str(dataset_dir),
                "--every", "40", "--json", *args)
    assert r.returncode == 0, r.stderr
    return {c["condition"]: c for c in json.loads(r.stdout)["conditions"]}


@pytest.mark.system
def test_conditions_run_through_the_device_pipeline(default_bundle, dataset_dir):
    out = _run(default_bundle, dataset_dir, "clean", "defocus sigma 4", "eyepiece disc off centre",
               "Gaussian noise sigma 8")
    clean = out["clean"]
    assert clean["n"] == 11 and clean["classified"] + sum(clean["rejected"].values()) == 11
    # the figures of this subset equal the manifest's clean row's where it is a subset of it: not
    # asserted; what must hold on any subset is that no malignant field is called negative
    assert clean["malignant_called_negative"] == 0 and clean["accuracy"] >= 6 / 11
    blurred = out["defocus sigma 4"]
    assert blurred["classified"] == 0 and blurred["rejected"] == {"out of focus": 11} and blurred["accuracy"] == 0.0
    assert out["Gaussian noise sigma 8"]["rejected"] == {"too noisy": 11}
    # the disc is found off centre too: nothing refused as the field stop
    assert "field stop in view" not in out["eyepiece disc off centre"]["rejected"]
    again = _run(default_bundle, dataset_dir, "Gaussian noise sigma 8")
    assert again["Gaussian noise sigma 8"] == out["Gaussian noise sigma 8"]  # seeded: the same figures


def test_an_unknown_condition_is_named(default_bundle, dataset_dir):
    r = run_cli("blastscope-edge", "robustness", "--bundle", str(default_bundle), "--data", str(dataset_dir),
                "--condition", "fog")
    assert r.returncode == 2 and "unknown condition(s) ['fog']" in r.stderr and "Traceback" not in r.stderr
