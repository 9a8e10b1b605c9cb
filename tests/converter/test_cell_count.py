"""The count rule's fit (``converter.cell_count``): raised from 1 one cell at a time while the
negative calls on exactly that many cells clear a malignant field and no more benign fields
than malignant ones; and the counts it is fitted on, through the device pipeline."""

from __future__ import annotations

import dataclasses

import pytest

from converter.cell_count import NegativesByCount, fit_min_cells, negatives_by_count, table
from edge.evaluation.dataset import Sample
from edge.model.bundle import default_bundle_path, load_bundle

from conftest import sample_paths


@pytest.mark.parametrize("malignant, benign, expected", [
    ({1: 5, 2: 1, 5: 4}, {2: 12, 3: 60, 5: 47}, 2),  # one cell clears only malignant fields: held back
    ({1: 3, 2: 2, 3: 1}, {1: 0, 2: 2, 3: 9}, 3),     # two cells clear as many malignant as benign: held back too
    ({2: 4}, {2: 1}, 1),                             # no malignant field cleared on one cell: no rule
    ({1: 2}, {1: 3}, 1),                             # one cell clears more benign than malignant: no rule
    ({k: 5 for k in range(1, 40)}, {}, 4),           # never past the most it may reach
])
def test_the_count_is_raised_while_it_holds_back_more_misses_than_clearances(malignant, benign, expected):
    assert fit_min_cells(NegativesByCount(malignant, benign, 100), most=4 if expected == 4 else 10) == expected


def test_the_fit_table_says_which_calls_are_held_back():
    text = table(NegativesByCount({1: 5, 2: 1}, {2: 12}, 100), 2)
    assert "| 1 | 5 | 0 | held back: uncertain |" in text and "| 2 | 1 | 12 | negative |" in text


def test_negative_calls_are_counted_by_the_cells_they_rest_on_through_the_device_pipeline():
    shipped = load_bundle(default_bundle_path())
    # a bundle whose rule would hold back every sample: the fit counts the calls without the rule
    bundle = dataclasses.replace(shipped, calibration=dataclasses.replace(shipped.calibration, min_cells_to_clear=50))
    samples = [Sample(p, p.name.split("__")[0]) for p in sample_paths()]
    counted = negatives_by_count(bundle, samples, ["clean", "flipped"], log=lambda _: None)
    assert counted.fields == 2 * len(samples)
    # the shipped samples: both benign fields are cleared on their 10 recognised cells under both
    # conditions, no malignant one is cleared
    assert counted.malignant == {} and counted.benign == {10: 4}
    assert counted.to_dict()["negative_calls_by_cells"] == [{"cells": 10, "malignant": 0, "benign": 4}]
    # with a threshold no field reaches, every field is called negative: the malignant ones are
    # counted apart, by their own cells (Early 163 and the Pro-B fields 5, Early 703 3, Pre 375 13, Pre 608 10)
    blind = dataclasses.replace(bundle, calibration=dataclasses.replace(
        bundle.calibration, malignant_threshold=1.0, uncertain_low=1.0, uncertain_high=1.0))
    counted = negatives_by_count(blind, samples, ["clean"], log=lambda _: None)
    assert counted.malignant == {5: 3, 3: 1, 13: 1, 10: 1} and counted.benign == {10: 2}
    assert counted.to_dict() == {"fields": 8, "negative_calls_by_cells": [
        {"cells": 3, "malignant": 1, "benign": 0}, {"cells": 5, "malignant": 3, "benign": 0},
        {"cells": 10, "malignant": 1, "benign": 2}, {"cells": 13, "malignant": 1, "benign": 0}]}
