"""The out-of-fold folds (issue 32, item 4): whole patient-proxy blocks of the real training
split, every class in every fold; a held-out subset keeps its cells with their fields; a field's
pooled score leaves "not a white cell" out and is the mean of its white cells."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from converter.cell_data import CellSet
from converter.differential_data import DIFF_LABELS
from converter.differential_kfold import field_scores, fold_of_blocks, subset
from edge.evaluation.dataset import load_dataset, number_blocks
from edge.model.bundle import default_bundle_path, load_bundle

from conftest import DATASET


def test_folds_are_whole_blocks_and_hold_every_class():
    if not DATASET.is_dir():
        pytest.skip(f"all-pbs-224 not found at {DATASET} (../shared is absent)")
    bundle = load_bundle(default_bundle_path())
    keys = set(bundle.manifest["split"]["keys"]["train"])
    samples = [s for s in load_dataset(DATASET).samples if s.key in keys]
    folds = fold_of_blocks(samples, 25, 4)
    assert set(folds) == keys and set(folds.values()) == {0, 1, 2, 3}
    fold_of_block = defaultdict(set)
    for s, block in zip(samples, number_blocks(samples, 25)):
        fold_of_block[block].add(folds[s.key])
    assert all(len(f) == 1 for f in fold_of_block.values())  # no block is split between folds
    for k in range(4):
        labels = {s.label for s in samples if folds[s.key] == k}
        assert {"benign", "early_pre_b", "pre_b", "pro_b"} <= labels, (k, labels)
    sizes = [sum(1 for v in folds.values() if v == k) for k in range(4)]
    assert max(sizes) < 2 * min(sizes), sizes


def _cells(fields: list[int]) -> CellSet:
    n = len(fields)
    f = max(fields) + 1
    return CellSet(np.arange(n * 12, dtype=np.uint8).reshape(n, 2, 2, 3), np.zeros((n, 2, 2), bool),
                   np.zeros((n, 2, 2), bool), np.array(fields), [f"k{i}" for i in range(f)], np.arange(f) % 4,
                   np.zeros(f), [])


def test_a_subset_keeps_each_cell_with_its_field():
    cells = _cells([0, 0, 1, 2, 2, 2])
    held = subset(cells, np.array([False, True, True]))
    assert held.keys == ["k1", "k2"] and list(held.field) == [0, 1, 1, 1]
    assert (held.rgb[0] == cells.rgb[2]).all() and list(held.field_labels) == [1, 2]


def test_a_field_score_is_the_mean_of_its_white_cells():
    cells = _cells([0, 0, 0, 1])
    probs = np.zeros((4, len(DIFF_LABELS)))
    probs[0, DIFF_LABELS.index("pre_b")] = 1.0
    probs[1, DIFF_LABELS.index("neutrophil")] = 1.0
    probs[2, DIFF_LABELS.index("not_a_white_cell")] = 1.0  # a platelet: neither votes nor counts
    probs[3, DIFF_LABELS.index("not_a_white_cell")] = 1.0
    pooled, counts = field_scores(probs, cells)
    assert list(counts) == [2, 0]
    assert pooled[0] == pytest.approx([0.5, 0.0, 0.5, 0.0])  # half blasts (pre_b), half benign (neutrophil)
    assert np.isnan(pooled[1]).all()


def test_the_report_reads_out_of_fold_scores_at_a_bundles_operating_point(tmp_path):
    """A clear benign block is called negative and a clear blast block positive at the
    candidate's operating point; a field with no white cell counts as not called right."""
    import json

    from converter.differential_kfold import report

    candidate = default_bundle_path().parent / "differential-candidate"
    pooled = np.array([[0.99, 0.0, 0.01, 0.0]] * 3 + [[0.05, 0.1, 0.8, 0.05]] * 2 + [[np.nan] * 4])
    np.savez_compressed(tmp_path / "oof_fold0.npz", keys=np.array([f"k{i}" for i in range(6)]),
                        labels=np.array([0, 0, 0, 2, 2, 2]), pooled=pooled, white_cells=np.array([5, 5, 5, 4, 4, 0]),
                        blocks=np.array([json.dumps(["benign", 1])] * 3 + [json.dumps(["pre_b", 1])] * 3))
    out = report(tmp_path, candidate)
    assert out["right_per_block"] == {"benign": [1.0], "malignant": [round(2 / 3, 3)]}
    assert out["auc"] == 1.0 and out["fields"] == {"benign": 3, "malignant": 2}


def _write_folds(path, folds: int, benign_shift: list[float], rng) -> None:
    """Out-of-fold files: per fold one benign block whose fields' malignant share sits at that
    block's own level (patients differ), and two malignant blocks read as blasts."""
    import json

    for k in range(folds):
        m_benign = np.clip(benign_shift[k] + rng.normal(0, 0.002, 25), 1e-4, 0.5)
        m_malig = np.clip(rng.uniform(0.3, 0.99, 50), 0, 1)
        m = np.concatenate([m_benign, m_malig])
        pooled = np.stack([1 - m, np.zeros_like(m), m, np.zeros_like(m)], 1)
        labels = np.array([0] * 25 + [2] * 50)
        blocks = [json.dumps(["benign", k])] * 25 + [json.dumps(["pre_b", 2 * k])] * 25 + [json.dumps(["pre_b", 2 * k + 1])] * 25
        np.savez_compressed(path / f"oof_fold{k}.npz", keys=np.array([f"f{k}-{i}" for i in range(75)]), labels=labels,
                            pooled=pooled, white_cells=np.full(75, 6), blocks=np.array(blocks))


def test_the_out_of_fold_operating_point_rests_on_blocks_and_needs_every_fold(tmp_path):
    """Item 4: the band is the spread of the thresholds over resampled *blocks*: with benign
    patients at different levels it is wider than a bootstrap of their fields says (which treats
    75 fields of 3 patients as 75 patients); a fit over part of the folds is refused."""
    from converter.calibration import fit_calibration
    from converter.differential_kfold import fit_out_of_fold, oof_scores

    candidate = load_bundle(default_bundle_path().parent / "differential-candidate")
    _write_folds(tmp_path, 4, [0.005, 0.01, 0.02, 0.04], np.random.default_rng(0))
    calibration, report, rule = fit_out_of_fold(tmp_path, candidate)
    assert report["resampled"].startswith("whole patient-proxy blocks") and report["blocks_benign"] == 4
    assert calibration.temperature == candidate.calibration.temperature  # the bundle's own
    assert calibration.min_cells_to_clear == 1  # no malignant field here is cleared on few cells
    assert report["min_cells_to_clear"]["fitted_on"].startswith("the same out-of-fold fields")
    assert "out-of-fold" in rule.fitted_on
    assert rule.count is None and report["count_rule"].startswith("not fitted")  # these folds keep no cells
    raw, truth, blocks, _, _ = oof_scores(tmp_path)
    by_fields = fit_calibration(raw, truth, 0.995, 0.95, band="bootstrap", temperature=candidate.calibration.temperature)
    width = report["specificity_threshold"]["range_90"]
    width_fields = by_fields.report["specificity_threshold"]["range_90"]
    assert width[1] - width[0] > 2 * (width_fields[1] - width_fields[0])
    (tmp_path / "oof_fold3.npz").unlink()
    with pytest.raises(ValueError, match="3 of 4 folds"):
        fit_out_of_fold(tmp_path, candidate)


def test_the_count_rule_is_fitted_with_the_thresholds_when_few_cell_fields_score_low(tmp_path):
    """Out of fold, the lowest malignant scores rest on one or two cells: fitting the threshold on
    every field drags it under most benign fields; holding fields of fewer cells back and fitting
    on the fields the threshold decides clears more benign fields at the same target."""
    import json

    from converter.differential_kfold import fit_out_of_fold

    candidate = load_bundle(default_bundle_path().parent / "differential-candidate")
    rng = np.random.default_rng(1)
    for k in range(4):
        m = np.concatenate([rng.uniform(0.001, 0.03, 40),  # benign fields
                            rng.uniform(0.3, 0.99, 90), rng.uniform(0.0, 0.002, 10)])  # blasts; 10 one-cell fields read low
        cells = np.array([6] * 130 + [1] * 10)
        np.savez_compressed(tmp_path / f"oof_fold{k}.npz", keys=np.array([f"f{k}-{i}" for i in range(140)]),
                            labels=np.array([0] * 40 + [2] * 100), white_cells=cells,
                            pooled=np.stack([1 - m, np.zeros_like(m), m, np.zeros_like(m)], 1),
                            blocks=np.array([json.dumps(["benign", k])] * 40 + [json.dumps(["pre_b", k])] * 100))
    calibration, report, _ = fit_out_of_fold(tmp_path, candidate)
    tried = {t["min_cells"]: t for t in report["min_cells_to_clear"]["tried"]}
    assert calibration.min_cells_to_clear == 2
    assert tried[2]["benign_called_negative"] > tried[1]["benign_called_negative"] + 0.5
    assert tried[2]["malignant_called_negative"] == 0  # the one-cell fields are held back, not cleared


def test_folds_with_their_cells_give_the_case_a_count_rule(tmp_path):
    """Item 3: with every fold's cell probabilities the case rule carries a count, fitted on the
    blocks' cases; a field's blasts are its white cells read as a blast subtype."""
    import json

    from converter.differential_data import DIFF_LABELS
    from converter.differential_kfold import fit_out_of_fold, oof_field_records

    candidate = load_bundle(default_bundle_path().parent / "differential-candidate")
    rng = np.random.default_rng(2)
    labels_index = {label: i for i, label in enumerate(DIFF_LABELS)}
    for k in range(4):
        probs, cell_field, pooled, blocks = [], [], [], []
        for f in range(100):
            benign = f < 40
            kinds = rng.choice(["benign", "neutrophil", "pre_b"] if benign else ["pre_b", "benign"], 6,
                               p=[0.5, 0.4, 0.1] if benign else [0.85, 0.15])
            for kind in list(kinds) + ["not_a_white_cell"]:  # a platelet in every field: never counted
                row = np.full(len(DIFF_LABELS), 0.01)
                row[labels_index[str(kind)]] = 0.9
                probs.append(row / row.sum())
                cell_field.append(f)
            m = rng.uniform(0.001, 0.02) if benign else rng.uniform(0.3, 0.99)
            pooled.append([1 - m, 0, m, 0])
            blocks.append(json.dumps(["benign", k] if benign else ["pre_b", k]))
        np.savez_compressed(tmp_path / f"oof_fold{k}.npz", keys=np.array([f"f{k}-{i}" for i in range(100)]),
                            labels=np.array([0] * 40 + [2] * 60), white_cells=np.full(100, 6), pooled=np.array(pooled),
                            blocks=np.array(blocks), cell_probs=np.array(probs, np.float16), cell_field=np.array(cell_field))
    benign, malignant, read = oof_field_records(tmp_path, candidate.calibration)
    assert len(read) == 4
    assert len(benign) == 4 and len(malignant) == 4
    assert all(r["white_cells"] == 6 and 0 <= r["blasts"] <= 6 for r in benign[0])
    assert np.mean([r["blasts"] for r in malignant[0]]) > 4 > 1 > np.mean([r["blasts"] for r in benign[0]])
    _, _, rule = fit_out_of_fold(tmp_path, candidate)
    assert rule.count is not None and rule.count.fit["blocks"] == {"benign": 4, "malignant": 4}
    assert 0.1 < rule.count.clear_below <= rule.count.refer_at < 0.6
    assert [c["size"] for c in rule.count.fit["cases_in_sample"]] == [5, 10]
    assert "every fold" in rule.count.fitted_on
