"""The site check's probe (issue 32): its AUC is the rank statistic, and a cross-validated
linear probe finds a site written in one feature and nothing in noise."""

from __future__ import annotations

import numpy as np
import pytest

from edge.evaluation.site_check import auc, probe_auc


def test_auc_is_the_rank_statistic():
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1])) == 0.5  # ties shared


def test_the_probe_finds_a_site_in_one_feature_and_none_in_noise():
    rng = np.random.default_rng(0)
    site = np.r_[np.zeros(200), np.ones(200)]
    noise = rng.normal(size=(400, 16))
    assert probe_auc(noise, site) == pytest.approx(0.5, abs=0.1)
    marked = noise.copy()
    marked[:, 3] += 1.5 * site  # one feature carries the site
    assert probe_auc(marked, site) > 0.8
