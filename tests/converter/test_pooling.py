"""The field rules compared by ``blastscope-convert compare-pools``: each rule on cells whose
answer is known, the device's rule fed exactly the cells the device pools, and test fields
never offered."""

from __future__ import annotations

import numpy as np
import pytest

from converter.pooling import RULES, arithmetic, blast_share, compare, field_cells, median, most_malignant, trimmed
from edge.analysis.cells import pool
from edge.analysis.imagefile import read_rgb
from edge.evaluation.dataset import load_dataset
from edge.evaluation.evaluate import samples_for_split
from edge.model.bundle import load_bundle
from edge.pipeline import Pipeline

from conftest import run_cli

# rows: benign, early_pre_b, pre_b, pro_b
CELLS = np.array([[0.70, 0.10, 0.10, 0.10],
                  [0.10, 0.60, 0.20, 0.10],
                  [0.20, 0.50, 0.20, 0.10],
                  [0.05, 0.15, 0.70, 0.10],
                  [0.90, 0.05, 0.03, 0.02]])


def test_each_rule_on_known_cells():
    assert np.allclose(arithmetic(CELLS), CELLS.mean(0))
    assert np.allclose(median(CELLS[:3]), (np.median(CELLS[:3], 0) + 1e-6) / (np.median(CELLS[:3], 0) + 1e-6).sum())
    assert np.array_equal(most_malignant(CELLS), CELLS[3])  # the least benign cell
    # the most and least benign-looking cells (rows 3 and 4) left out
    assert np.allclose(trimmed(CELLS), pool(CELLS[:3]))
    assert np.allclose(trimmed(CELLS[:3]), pool(CELLS[:3]))  # too few cells to trim
    shared = blast_share(CELLS)
    assert shared[0] == pytest.approx(2 / 5, abs=1e-3)  # 3 of 5 cells called a blast
    assert shared[1] > shared[2] > shared[3]  # shared among subtypes as the geometric mean
    for rule in RULES.values():
        assert rule(CELLS).sum() == pytest.approx(1.0)
    assert list(RULES)[0] == "geometric mean (device)" and RULES["geometric mean (device)"] is pool


@pytest.mark.system
def test_the_device_rule_sees_the_cells_the_device_pools(dataset_dir, default_bundle):
    """On real validation fields, the cells ``field_cells`` hands the rules, pooled by the
    device's rule, give the raw probabilities the device pipeline itself computes."""
    bundle = load_bundle(default_bundle)
    samples = samples_for_split(bundle, load_dataset(dataset_dir), "val")[::3]
    fields = field_cells(bundle, samples)
    assert len(fields) >= 0.9 * len(samples)
    pipeline = Pipeline.on_cpu(bundle)
    unfamiliar = 0
    for sample, cells in fields:
        result = pipeline.process(read_rgb(sample.path), source="test")
        if result.classified:
            assert np.allclose(pool(cells), result.raw_probabilities, atol=1e-6), sample.path.name
            unfamiliar += any(not c.familiar for c in result.cells)
    assert unfamiliar > 0  # the fields include cells the device leaves out of the call
    figures = compare(bundle, fields)
    assert [f.rule for f in figures] == list(RULES)
    assert all(0.5 <= f.auc <= 1.0 and f.fields == len(fields) for f in figures)


def test_compare_pools_never_offers_the_test_split(default_bundle, tmp_path):
    result = run_cli("blastscope-convert", "compare-pools", str(default_bundle), "--data", str(tmp_path),
                     "--split", "test")
    assert result.returncode == 2 and "invalid choice: 'test'" in result.stderr
