"""``blastscope-convert refit`` fits the calibration again as the build fitted it, on the
probabilities the device computes now: real bundle, real validation fields."""

from __future__ import annotations

import dataclasses

import pytest

from converter.refit import refit_calibration
from edge.analysis.screening import Calibration
from edge.evaluation.dataset import load_dataset
from edge.evaluation.evaluate import samples_for_split
from edge.model.bundle import load_bundle


@pytest.mark.system
def test_refit_calibration_gives_back_the_shipped_calibration(dataset_dir, default_bundle):
    """The shipped calibration was fitted by ``refit`` at the current code, so fitting it again
    from a bundle whose calibration was wiped gives the same numbers: same targets and band
    kind (read from the manifest), the same validation fields, run without the quality gate."""
    shipped = load_bundle(default_bundle)
    wiped = dataclasses.replace(shipped, calibration=Calibration(),
                                manifest={**shipped.manifest, "calibration": Calibration().to_dict()})
    val = samples_for_split(shipped, load_dataset(dataset_dir), "val")
    calibration, report = refit_calibration(wiped, val, log=lambda _: None)
    assert calibration == shipped.calibration
    assert calibration.uncertain_low < calibration.malignant_threshold < calibration.uncertain_high  # a band with width
    assert report["band"] == shipped.manifest["calibration_fit"]["int8"]["band"] == "bootstrap"
    assert report["targets"] == shipped.manifest["calibration_fit"]["int8"]["targets"]
