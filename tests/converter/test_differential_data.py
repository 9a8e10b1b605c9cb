"""The differential's training draws: each group gets its share of a batch, and a pseudo-label
moves a cell only to a non-lymphoid class an earlier model is sure of. Arithmetic over label
arrays: no image is needed to check it."""

from __future__ import annotations

import numpy as np
import pytest

from converter.cell_data import CellSet
from converter.differential_data import DIFF_LABELS, SHARES, draw_weights, merge, pseudo_label


def _cells(labels: list[str]) -> CellSet:
    n = len(labels)
    return CellSet(np.zeros((n, 2, 2, 3), np.uint8), np.zeros((n, 2, 2), bool), np.zeros((n, 2, 2), bool),
                   np.arange(n), [f"f{i}" for i in range(n)], np.array([DIFF_LABELS.index(x) for x in labels]),
                   np.full(n, np.nan), [])


def test_each_group_gets_its_share_whatever_its_size():
    allpbs = _cells(["benign"] * 10 + ["pre_b"] * 300 + ["early_pre_b"] * 5 + ["pro_b"] * 7 + ["neutrophil"])
    pbc = _cells(["benign"] * 200 + ["neutrophil"] * 50 + [n for n in SHARES if ":" not in n
                                                            and n not in ("early_pre_b", "pre_b", "pro_b")])
    w = draw_weights(allpbs, pbc, SHARES)
    merged = merge(allpbs, pbc)
    site = np.r_[np.zeros(len(allpbs.keys)), np.ones(len(pbc.keys))]
    benign = merged.labels == DIFF_LABELS.index("benign")
    assert w.sum() == pytest.approx(1.0)
    assert w[benign & (site == 0)].sum() == pytest.approx(SHARES["allpbs:benign"])
    assert w[benign & (site == 1)].sum() == pytest.approx(SHARES["pbc:benign"])
    assert w[merged.labels == DIFF_LABELS.index("pre_b")].sum() == pytest.approx(SHARES["pre_b"])
    # a class of both sites: its share is split over its cells, wherever they come from
    neutrophil = merged.labels == DIFF_LABELS.index("neutrophil")
    assert w[neutrophil].sum() == pytest.approx(SHARES["neutrophil"])
    with pytest.raises(ValueError, match="shared per site"):
        draw_weights(allpbs, pbc, {"benign": 1.0})


def test_a_pseudo_label_is_a_sure_non_lymphoid_call_and_the_field_keeps_its_label():
    cells = _cells(["pre_b", "pre_b", "pre_b", "benign"])
    probs = np.full((4, len(DIFF_LABELS)), 0.01)
    probs[0, DIFF_LABELS.index("neutrophil")] = 0.9  # sure: moves
    probs[1, DIFF_LABELS.index("neutrophil")] = 0.5  # not sure: stays a blast
    probs[2, DIFF_LABELS.index("benign")] = 0.99  # lymphoid is never taken from a weak label
    probs[3, DIFF_LABELS.index("not_a_white_cell")] = 0.8
    moved, taken = pseudo_label(cells, probs, 0.7)
    assert [DIFF_LABELS[k] for k in moved.labels] == ["neutrophil", "pre_b", "pre_b", "not_a_white_cell"]
    assert (moved.field_labels == cells.field_labels).all()
    assert taken["neutrophil"] == 1 and taken["not_a_white_cell"] == 1
    assert [DIFF_LABELS[k] for k in merge(moved, cells).labels][:4] == ["neutrophil", "pre_b", "pre_b",
                                                                        "not_a_white_cell"]
