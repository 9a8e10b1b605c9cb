"""The case's count rule (issue 32, items 3-4): limits from cases drawn within each block, the
bootstrap over whole blocks. Field records stand in for the out-of-fold fields (the fold files
are training artefacts, not in the repository); the arithmetic is what is checked here, the
rule's figures on real fields come from ``refit --out-of-fold`` and ``evaluate --case-size``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from converter.case_count import MIN_WHITE_CELLS, case_figures_by_block, fit_count_rule
from edge.analysis.case import CaseRule


def _blocks(shares: list[float], fields: int = 25, seed: int = 0) -> list[list[dict]]:
    rng = np.random.default_rng(seed)
    out = []
    for share in shares:
        records = []
        for _ in range(fields):
            white = int(rng.integers(3, 10))
            blasts = int(rng.binomial(white, share))
            records.append({"status": "classified", "call": "positive" if blasts * 2 > white else "negative",
                            "label": "pre_b" if blasts * 2 > white else "benign", "white_cells": white, "blasts": blasts})
        out.append(records)
    return out


RULE = CaseRule(0.05, 0.95)


def test_limits_sit_between_the_blocks_and_on_their_safe_side():
    benign = _blocks([0.05, 0.08, 0.10, 0.12, 0.15], seed=1)
    malignant = _blocks([0.9] * 20 + [0.55, 0.6], seed=2)
    count = fit_count_rule(benign, malignant, RULE, "unit")
    assert count.min_white_cells == MIN_WHITE_CELLS
    # the benign blocks' cases reach about 0.15 + noise; the lowest malignant block sits at 0.55
    assert 0.15 < count.clear_below <= count.refer_at < 0.55, count
    assert count.fit["blocks"] == {"benign": 5, "malignant": 22}
    # the bootstrap end is the one used: never looser than the point estimate
    assert count.clear_below <= count.fit["clear_below"]["point"] + 0.01
    assert count.refer_at >= count.fit["refer_at"]["point"] - 0.01
    figures = case_figures_by_block(benign, malignant, dataclasses.replace(RULE, count=count), 5)
    assert figures["malignant"]["wrong"] == 0 and figures["benign"]["right"] > 0.8, figures


def test_one_patient_unlike_the_others_moves_the_limit():
    """A single benign patient whose cells read as blasts more often pushes the referral limit up:
    the limit must hold for patients like it."""
    usual = _blocks([0.05, 0.08, 0.10, 0.12], seed=3)
    unusual = _blocks([0.30], seed=4)
    malignant = _blocks([0.9] * 20, seed=5)
    without = fit_count_rule(usual, malignant, RULE, "unit")
    with_it = fit_count_rule(usual + unusual, malignant, RULE, "unit")
    assert with_it.refer_at > without.refer_at + 0.1, (without, with_it)


def test_too_few_blocks_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 3 benign and 3 malignant blocks"):
        fit_count_rule(_blocks([0.1, 0.1]), _blocks([0.9] * 5), RULE, "unit")
