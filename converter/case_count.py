"""The case's count rule fitted on patients (issue 32, items 3 and 4): blasts among the white cells.

Why cases drawn within blocks: a case is one patient's slide, so its fields share the patient's
cells; a benign patient whose hematogones the model reads as blasts gives every field of its
case a high share. Cases are drawn from the fields of one patient-proxy block as the device first decides
them, the same number from every block (a block with more fields is not more patients), and the
limits are the share quantiles at the rule's own error rates: ``clear_below`` leaves at most
``beta`` of malignant cases below it, ``refer_at`` at most ``alpha`` of benign cases at or above
it, and a case is never cleared above ``refer_at`` (where no benign case was seen). Each is
then taken at the safe end of its range over bootstrap resamples of whole blocks
(the lower end for clearing, the higher for referring), so the limits say how they move from
one set of patients to another, not only on these.

``min_white_cells`` is not fitted: ``MIN_WHITE_CELLS``, a chosen guard (below it the case asks for
more fields), stated in the fit.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from edge.analysis.case import BlastCountRule, CaseRule, case_call

#: The fewest white cells a case is cleared on: a hematologist counts 100; a 5-field case
#: holds about 30 here (out of fold, median), and 20 is its 5th percentile on benign slides.
MIN_WHITE_CELLS = 20
CASES_PER_BLOCK = 50
BOOTSTRAPS = 200


def _case_shares(blocks: Sequence[Sequence[Mapping[str, Any]]], min_fields: int, rng: np.random.Generator
                 ) -> list[np.ndarray]:
    """Per block: the model's blast share of ``CASES_PER_BLOCK`` cases as the device first
    decides them: the block's classified fields in a random order, taken until at least
    ``min_fields`` fields and ``MIN_WHITE_CELLS`` white cells are in (the smallest cases the
    count rule calls, so the widest spread); a block that never gets there gives none."""
    out = []
    for fields in blocks:
        usable = [f for f in fields if f.get("status") == "classified" and "white_cells" in f]
        white = np.array([int(f["white_cells"]) for f in usable])
        blasts = np.array([int(f["blasts"]) for f in usable])
        if len(usable) < min_fields or white.sum() < MIN_WHITE_CELLS:
            continue
        shares = np.empty(CASES_PER_BLOCK)
        for i in range(CASES_PER_BLOCK):
            order = rng.permutation(len(usable))
            w = np.cumsum(white[order])
            n = max(min_fields, int(np.argmax(w >= MIN_WHITE_CELLS)) + 1)
            shares[i] = blasts[order[:n]].sum() / w[n - 1]
        out.append(shares)
    return out


def _limits(benign: list[np.ndarray], malignant: list[np.ndarray], alpha: float, beta: float) -> tuple[float, float]:
    """(clear_below, refer_at) from per-block case shares, every block weighing the same."""
    mal, ben = np.concatenate(malignant), np.concatenate(benign)
    return float(np.quantile(mal, beta)), float(np.quantile(ben, 1.0 - alpha))


def fit_count_rule(benign_blocks: Sequence[Sequence[Mapping[str, Any]]],
                   malignant_blocks: Sequence[Sequence[Mapping[str, Any]]], rule: CaseRule,
                   fitted_on: str, seed: int = 0) -> BlastCountRule:
    """The count rule from field records (as the device stores them: ``status``, ``call``,
    ``label``, ``white_cells``, ``blasts``) grouped by block, for the smallest cases it calls
    (``rule.min_fields`` fields and ``MIN_WHITE_CELLS`` white cells), at ``rule``'s alpha and
    beta. Raises when the blocks do not allow a fit."""
    rng = np.random.default_rng(seed)
    benign = _case_shares(benign_blocks, rule.min_fields, rng)
    malignant = _case_shares(malignant_blocks, rule.min_fields, rng)
    if len(benign) < 3 or len(malignant) < 3:
        raise ValueError(f"a count rule needs cases from at least 3 benign and 3 malignant blocks "
                         f"({len(benign)} and {len(malignant)} reach {MIN_WHITE_CELLS} white cells)")
    clear, refer = _limits(benign, malignant, rule.alpha, rule.beta)
    clears, refers = [], []
    for _ in range(BOOTSTRAPS):
        b = [benign[i] for i in rng.integers(0, len(benign), len(benign))]
        m = [malignant[i] for i in rng.integers(0, len(malignant), len(malignant))]
        c, r = _limits(b, m, rule.alpha, rule.beta)
        clears.append(c)
        refers.append(r)
    clear_below = float(np.floor(100 * min(clear, np.quantile(clears, 0.05))) / 100)
    refer_at = float(np.ceil(100 * max(refer, np.quantile(refers, 0.95))) / 100)
    if clear_below <= 0:
        raise ValueError("the malignant cases' blast shares reach 0: no share clears a case safely")
    # a case is cleared only where benign cases are seen too: with the classes far apart the
    # malignant limit alone would clear shares no benign case reaches (e.g. 60% blasts)
    refer_at = min(refer_at, 1.0)
    clear_below = min(clear_below, refer_at)
    fit = {"cases": f"the block's fields in a random order until >= {rule.min_fields} fields and "
                    f">= {MIN_WHITE_CELLS} white cells", "blocks": {"benign": len(benign), "malignant": len(malignant)},
           "cases_per_block": CASES_PER_BLOCK, "bootstraps": BOOTSTRAPS,
           "clear_below": {"point": round(clear, 4), "block_bootstrap_5th": round(float(np.quantile(clears, 0.05)), 4)},
           "refer_at": {"point": round(refer, 4), "block_bootstrap_95th": round(float(np.quantile(refers, 0.95)), 4)},
           "min_white_cells": f"{MIN_WHITE_CELLS}, a chosen guard (not fitted): see converter.case_count"}
    count = BlastCountRule(clear_below, refer_at, MIN_WHITE_CELLS, fitted_on, fit)
    return count


def case_figures_by_block(benign_blocks: Sequence[Sequence[Mapping[str, Any]]],
                          malignant_blocks: Sequence[Sequence[Mapping[str, Any]]], rule: CaseRule, size: int,
                          seed: int = 0) -> dict[str, Any]:
    """How ``rule`` calls random cases of ``size`` fields drawn within each block (the same number
    a block): the share of benign cases cleared and malignant cases called positive or negative,
    pooled and per block (lowest, median). In-sample when the rule was fitted on these blocks."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"size": size}
    for side, blocks in (("benign", benign_blocks), ("malignant", malignant_blocks)):
        per_block = []
        every: list[str] = []
        for fields in blocks:
            if len(fields) < size:
                continue
            calls = [case_call([fields[i] for i in rng.choice(len(fields), size, replace=False)], rule).call
                     for _ in range(CASES_PER_BLOCK)]
            every += calls
            per_block.append(calls.count("negative" if side == "benign" else "positive") / len(calls))
        if not per_block:
            continue
        out[side] = {"blocks": len(per_block), "cases": len(every),
                     "right": round(every.count("negative" if side == "benign" else "positive") / len(every), 4),
                     "wrong": round(every.count("positive" if side == "benign" else "negative") / len(every), 4),
                     "right_lowest_block": round(min(per_block), 4),
                     "right_median_block": round(float(np.median(per_block)), 4)}
    out["right_means"] = "benign: cases called negative; malignant: cases called positive"
    return out
