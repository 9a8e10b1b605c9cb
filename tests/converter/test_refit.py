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
    # the thresholds wiped; the count rule is fitted apart and kept (the next test)
    blank = Calibration(min_cells_to_clear=shipped.calibration.min_cells_to_clear)
    wiped = dataclasses.replace(shipped, calibration=blank, manifest={**shipped.manifest, "calibration": blank.to_dict()})
    val = samples_for_split(shipped, load_dataset(dataset_dir), "val")
    calibration, report = refit_calibration(wiped, val, log=lambda _: None)
    # int8 kernels differ between x86 machines (XNNPACK takes an AVX-512 or an AVX2 path): on
    # another machine the threshold came out 0.087114 against the shipped 0.087549 (0.5%, issue
    # 36); 3% holds that with room, and a wrong fit (another target, band or split) moves it far more
    for name in ("temperature", "malignant_threshold", "uncertain_low", "uncertain_high"):
        assert getattr(calibration, name) == pytest.approx(getattr(shipped.calibration, name), rel=0.03), name
    assert calibration.min_cells_to_clear == shipped.calibration.min_cells_to_clear
    assert calibration.uncertain_low < calibration.malignant_threshold < calibration.uncertain_high  # a band with width
    assert report["band"] == shipped.manifest["calibration_fit"]["int8"]["band"] == "bootstrap"
    assert report["targets"] == shipped.manifest["calibration_fit"]["int8"]["targets"]


def test_refit_calibration_keeps_the_bundles_cell_count_rule(default_bundle):
    """The thresholds are fitted again; the count rule (``converter.cell_count``) is not
    theirs to move. Real bundle, the shipped sample fields standing in for validation."""
    from conftest import sample_paths
    from edge.evaluation.dataset import Sample

    shipped = load_bundle(default_bundle)
    ruled = dataclasses.replace(shipped, calibration=dataclasses.replace(shipped.calibration, min_cells_to_clear=7))
    val = [Sample(p, p.name.split("__")[0]) for p in sample_paths()]
    calibration, _ = refit_calibration(ruled, val, log=lambda _: None)
    assert calibration.min_cells_to_clear == 7
    assert calibration.temperature != shipped.calibration.temperature  # fitted again, on these eight fields


@pytest.mark.system
def test_the_embedding_check_fitted_again_is_the_shipped_one(dataset_dir, default_bundle):
    """``blastscope-convert fit-checks`` fits the embedding check as the build did (every 3rd
    training cell, the limit from every 4th validation field under the benign conditions). The
    shipped model cuts its cells nearly as at its build, so fitting it again gives back its
    check: this fails if the fit used other cells, other conditions or another percentile."""
    import numpy as np

    from converter.cell_data import extract
    from converter.ood_fit import fit_embedding_check
    from edge.model.ood import OodCheck

    shipped = load_bundle(default_bundle)
    dataset = load_dataset(dataset_dir)
    train = extract(samples_for_split(shipped, dataset, "train"), shipped.segmentation, shipped.cells,
                    log=lambda _: None)
    check, report = fit_embedding_check(shipped, train, samples_for_split(shipped, dataset, "val"),
                                        log=lambda _: None)
    recorded = OodCheck.from_dict(shipped.manifest["ood"])
    # the cells are cut a little differently since the build (the ruler's faster shading moved a
    # few cells across the size limits), so the counts and figures agree closely, not exactly
    assert report["training_cells"] == pytest.approx(shipped.manifest["ood_fit"]["training_cells"], rel=0.005)
    assert check.limit == pytest.approx(max(report["per_condition"].values()), abs=1e-3)
    assert check.limit == pytest.approx(recorded.limit, rel=0.02)
    assert np.allclose(check.mean, recorded.mean, atol=0.05 * np.abs(recorded.mean).max())


def test_the_second_split_is_set_in_the_bundle_the_device_reads(default_bundle):
    """``refit --resplit`` changes the parsed segmentation and the manifest alike, so the
    pipeline that re-measures the bundle and the device that loads it segment the same way."""
    from converter.refit import with_resplit
    from edge.analysis.segmentation import SegmentationParams

    shipped = load_bundle(default_bundle)
    for value in (False, True):
        changed = with_resplit(shipped, value)
        assert changed.segmentation.resplit is value
        assert SegmentationParams.from_dict(changed.manifest["segmentation"]) == changed.segmentation
        assert {k: v for k, v in changed.manifest["segmentation"].items() if k != "resplit"} == \
            {k: v for k, v in shipped.manifest["segmentation"].items() if k != "resplit"}
