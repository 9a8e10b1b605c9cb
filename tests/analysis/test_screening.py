"""Calibration, the screening call and the metrics, with hand-checked values."""

from __future__ import annotations

import numpy as np
import pytest

from converter.calibration import fit_calibration, fit_temperature
from edge.analysis.labels import LABELS
from edge.evaluation.metrics import summarize, wilson_interval
from edge.analysis.screening import FEW_CELLS, Calibration, calibrated, screen


def test_temperature_one_is_identity_and_rows_sum_to_one():
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    assert np.allclose(calibrated(p, 1.0), p)
    soft = calibrated(p, 2.0)
    assert np.allclose(soft.sum(axis=1), 1) and soft[0, 0] < 0.7  # T>1 softens


def test_screen_calls_and_uncertain_band():
    cal = Calibration(temperature=1.0, malignant_threshold=0.5, uncertain_low=0.3, uncertain_high=0.7)
    negative = screen(np.array([0.9, 0.05, 0.03, 0.02]), cal)
    assert (negative.label, negative.call) == ("benign", "negative")
    assert negative.malignant_probability == pytest.approx(0.1)
    positive = screen(np.array([0.05, 0.1, 0.8, 0.05]), cal)
    assert (positive.label, positive.call) == ("pre_b", "positive")
    unsure = screen(np.array([0.5, 0.2, 0.2, 0.1]), cal)
    assert (unsure.label, unsure.call) == ("uncertain", "uncertain")
    assert list(unsure.probabilities) == list(LABELS)


def test_calibration_rejects_inconsistent_band():
    with pytest.raises(ValueError):
        Calibration(malignant_threshold=0.5, uncertain_low=0.6, uncertain_high=0.7)
    with pytest.raises(ValueError):
        Calibration(temperature=0)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(95, 100)
    assert lo == pytest.approx(0.8882, abs=1e-3) and hi == pytest.approx(0.9785, abs=1e-3)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-3)


def test_summarize_counts_unclassified_and_uncertain_against_the_model():
    cal = Calibration(temperature=1.0, malignant_threshold=0.5, uncertain_low=0.4, uncertain_high=0.6)
    truth = ["benign", "pre_b", "pro_b", "early_pre_b", "benign"]
    raws = [np.array([0.9, 0.05, 0.03, 0.02]),   # right, negative
            np.array([0.0, 0.1, 0.9, 0.0]),      # right, positive
            np.array([0.5, 0.0, 0.0, 0.5]),      # argmax benign (first); m=0.5: above threshold, uncertain
            None,                                # no cells: not classified
            np.array([0.2, 0.7, 0.05, 0.05])]    # wrong, false positive
    m = summarize(truth, raws, cal)
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(2 / 5)
    assert m["unclassified"] == 1 and m["uncertain"] == 1
    assert m["malignant_sensitivity"] == pytest.approx(1 / 3)  # called positive: the uncertain one is not
    assert m["accuracy_decided"] == pytest.approx(2 / 3) and m["uncertain_by_class"] == [0, 0, 0, 1]
    assert m["benign_specificity"] == pytest.approx(1 / 2)
    assert m["screening"]["malignant_flagged"] == pytest.approx(2 / 3)  # positive or uncertain
    assert m["screening"]["benign_cleared"] == pytest.approx(1 / 2)  # called negative
    assert m["confusion"][0] == [1, 1, 0, 0]
    assert m["per_class"]["early_pre_b"]["recall"] == 0.0


def test_the_label_shown_is_the_label_scored():
    """Benign is the top class, but the malignant probability passes the threshold: the page
    shows Pre-B with a positive call, so the metrics count Pre-B, not the argmax."""
    from edge.analysis.screening import screen

    cal = Calibration(temperature=1.0, malignant_threshold=0.3, uncertain_low=0.3, uncertain_high=0.3)
    raw = np.array([0.6, 0.1, 0.25, 0.05])
    shown = screen(raw, cal)
    assert int(np.argmax(raw)) == 0 and shown.call == "positive" and shown.label == "pre_b"
    m = summarize(["pre_b"], [raw], cal)
    assert m["accuracy"] == 1.0 and m["confusion"][2] == [0, 0, 1, 0] and m["malignant_sensitivity"] == 1.0
    m = summarize(["benign"], [raw], cal)
    assert m["accuracy"] == 0.0 and m["confusion"][0] == [0, 0, 1, 0] and m["benign_specificity"] == 0.0


def _probs(malignant_p: np.ndarray) -> np.ndarray:
    """Raw 4-class probabilities with the given malignant probability (spread over pre_b)."""
    return np.stack([1 - malignant_p, np.zeros_like(malignant_p), malignant_p, np.zeros_like(malignant_p)], axis=1)


def test_one_confident_miss_does_not_make_every_benign_field_uncertain():
    rng = np.random.default_rng(1)
    malignant = np.concatenate([rng.uniform(0.85, 0.99, 300), [0.02]])  # one confidently wrong field
    benign = rng.uniform(0.05, 0.2, 100)  # soft, label-smoothed outputs
    raw = _probs(np.concatenate([malignant, benign]))
    truth = np.array([2] * len(malignant) + [0] * len(benign))
    cal = fit_calibration(raw, truth).calibration
    m = summarize([LABELS[t] for t in truth], list(raw), cal)
    assert m["screening"]["benign_cleared"] >= 0.97 and m["uncertain"] <= 5
    assert m["malignant_sensitivity"] >= 0.995 * 300 / 301


def test_overlapping_classes_get_a_band_between_the_two_targets():
    rng = np.random.default_rng(2)
    raw = _probs(np.concatenate([rng.uniform(0.3, 1.0, 400), rng.uniform(0.0, 0.6, 200)]))
    truth = np.array([2] * 400 + [0] * 200)
    cal = fit_calibration(raw, truth).calibration
    assert cal.uncertain_low == cal.malignant_threshold < cal.uncertain_high
    m = summarize([LABELS[t] for t in truth], list(raw), cal)
    # the band keeps 99.5% of malignant fields from being cleared; those inside it are shown as
    # uncertain, so they are flagged for a read but not counted as detected
    assert m["screening"]["malignant_flagged"] >= 0.995 and m["uncertain"] > 0
    assert m["malignant_sensitivity"] == pytest.approx(m["screening"]["malignant_flagged"] - m["uncertain_by_class"][2] / 400)


def test_fit_calibration_on_synthetic_validation():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 400)
    logits = rng.normal(0, 1, (400, 4))
    logits[np.arange(400), truth] += 6.0  # a confident, mostly right model
    raw = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = fit_temperature(raw, truth)
    assert 0.2 <= t <= 5.0
    cal = fit_calibration(raw, truth).calibration
    malignant = 1 - calibrated(raw, cal.temperature)[:, 0]
    assert np.mean(malignant[truth != 0] >= cal.malignant_threshold) >= 0.995
    assert np.mean(malignant[truth == 0] < cal.uncertain_high) >= 0.97
    assert cal.uncertain_low <= cal.malignant_threshold <= cal.uncertain_high


def cal_matches_bagged(fit) -> bool:
    """The calibration the device applies is the bagged pair the report shows."""
    low, high = fit.report["sensitivity_threshold"]["bagged"], fit.report["specificity_threshold"]["bagged"]
    cal = fit.calibration
    if low < high:
        return (cal.uncertain_low, cal.uncertain_high) == (low, high)
    return cal.malignant_threshold == round((low + high) / 2, 6)


def test_bagged_threshold_is_steadier_than_one_order_statistic():
    """Ten validation splits drawn from the same model: the bagged sensitivity threshold moves
    less between them than the single order statistic the previous release used."""
    bagged, single = [], []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        malignant = np.concatenate([rng.beta(8, 1.2, 340), rng.uniform(0.05, 0.6, 8)])  # a thin tail of misses
        benign = rng.beta(1.2, 12, 62)
        raw = _probs(np.concatenate([malignant, benign]))
        truth = np.array([2] * len(malignant) + [0] * len(benign))
        fit = fit_calibration(raw, truth)
        report = fit.report["sensitivity_threshold"]
        assert report["range_90"][0] <= report["range_90"][1]
        assert cal_matches_bagged(fit)
        bagged.append(report["bagged"])
        single.append(report["single_fit"])
    assert np.std(bagged) < np.std(single)


def test_thresholds_are_fitted_with_the_temperature_the_device_uses():
    rng = np.random.default_rng(3)
    raw = _probs(np.concatenate([rng.uniform(0.3, 1.0, 400), rng.uniform(0.0, 0.6, 200)]))
    truth = np.array([2] * 400 + [0] * 200)
    cal = fit_calibration(raw, truth).calibration
    assert cal.temperature == round(cal.temperature, 4)
    shown = [screen(r, cal) for r in raw]
    m = np.array([s.malignant_probability for s in shown])
    assert np.array_equal(m >= cal.malignant_threshold, (1 - calibrated(raw, cal.temperature)[:, 0]) >= cal.malignant_threshold)


def test_a_negative_call_on_too_few_cells_is_uncertain_with_the_reason():
    cal = Calibration(temperature=1.0, malignant_threshold=0.5, uncertain_low=0.3, uncertain_high=0.7,
                      min_cells_to_clear=3)
    benign_looking = np.array([0.9, 0.05, 0.03, 0.02])
    held = screen(benign_looking, cal, cells=2)
    assert (held.label, held.call, held.call_reason) == ("uncertain", "uncertain", FEW_CELLS)
    assert held.malignant_probability == pytest.approx(0.1)  # the probabilities are the model's, unchanged
    assert held.probabilities == pytest.approx(dict(zip(LABELS, benign_looking)))
    cleared = screen(benign_looking, cal, cells=3)  # exactly the count clears
    assert (cleared.label, cleared.call, cleared.call_reason) == ("benign", "negative", None)
    assert cleared.probabilities == held.probabilities
    # a field model (no cells counted) and a bundle without the rule call as before
    assert screen(benign_looking, cal).call == "negative"
    assert screen(benign_looking, Calibration(temperature=1.0, uncertain_low=0.3, uncertain_high=0.7), cells=1).call \
        == "negative"
    # a positive call on one cell is never held back; the band's uncertain carries no count reason
    one_blast = screen(np.array([0.05, 0.1, 0.8, 0.05]), cal, cells=1)
    assert (one_blast.label, one_blast.call) == ("pre_b", "positive")
    assert one_blast.probabilities == pytest.approx(dict(zip(LABELS, [0.05, 0.1, 0.8, 0.05])))
    band = screen(np.array([0.5, 0.2, 0.2, 0.1]), cal, cells=1)
    assert (band.call, band.call_reason) == ("uncertain", None)


def test_the_band_and_the_threshold_include_their_lower_edge():
    """Exactly at the band's low end is uncertain; exactly at the threshold (no band) is positive."""
    even = np.full(4, 0.25)  # calibrated exactly: malignant probability 0.75, no rounding
    assert screen(even, Calibration(temperature=1.0)).malignant_probability == 0.75
    at_low = Calibration(temperature=1.0, malignant_threshold=0.75, uncertain_low=0.75, uncertain_high=0.9)
    at_high = Calibration(temperature=1.0, malignant_threshold=0.5, uncertain_low=0.5, uncertain_high=0.75)
    at_threshold = Calibration(temperature=1.0, malignant_threshold=0.75, uncertain_low=0.75, uncertain_high=0.75)
    assert screen(even, at_low).call == "uncertain"
    assert screen(even, at_high).call == "positive" and screen(even, at_threshold).call == "positive"
    # the whole range is allowed: a band from 0, a band up to 1
    assert Calibration(malignant_threshold=0.0, uncertain_low=0.0, uncertain_high=1.0).uncertain_high == 1.0
    with pytest.raises(ValueError):
        Calibration(malignant_threshold=0.5, uncertain_low=0.5, uncertain_high=1.5)


def test_the_cell_count_rule_is_read_from_the_manifest_and_checked():
    old = {"temperature": 0.5, "malignant_threshold": 0.2, "uncertain_low": 0.1, "uncertain_high": 0.3}
    assert Calibration.from_dict(old) == Calibration(**old)  # a bundle that names none: no rule
    assert Calibration.from_dict(old).min_cells_to_clear == 1
    assert Calibration(min_cells_to_clear=100).min_cells_to_clear == 100  # the whole range is allowed
    fitted = Calibration.from_dict({**old, "min_cells_to_clear": 2})
    assert fitted.min_cells_to_clear == 2 and Calibration.from_dict(fitted.to_dict()) == fitted
    for wrong in (2.5, "2", True, 0, 101):
        with pytest.raises(ValueError, match="min_cells_to_clear"):
            Calibration.from_dict({**old, "min_cells_to_clear": wrong})


def test_summarize_scores_the_count_rule_as_the_device_calls():
    cal = Calibration(temperature=1.0, malignant_threshold=0.5, uncertain_low=0.5, uncertain_high=0.5,
                      min_cells_to_clear=2)
    truth = ["benign", "benign", "early_pre_b", "pro_b"]
    raws = [np.array([0.9, 0.05, 0.03, 0.02])] * 3 + [None]
    m = summarize(truth, raws, cal, cells=[5, 1, 1, None])
    assert m["benign_specificity"] == pytest.approx(1 / 2)  # the one-cell benign field is uncertain, not cleared
    assert m["uncertain_by_class"] == [1, 1, 0, 0] and m["uncertain"] == 2
    assert m["screening"]["malignant_flagged"] == pytest.approx(1 / 2)  # the one-cell malignant field is flagged
    with_no_counts = summarize(truth, raws, cal)
    assert with_no_counts["uncertain"] == 0 and with_no_counts["benign_specificity"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        summarize(truth, raws, cal, cells=[5, 1])  # a count per field, or none
