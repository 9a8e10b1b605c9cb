"""The test-split suites a bundle records beside its metrics: the capture-condition suite, the
shortcut tests and the foreign-looking fields. One function, so the build, ``refit`` and
``fit-appearance`` record the same figures the device's commands print (``blastscope-edge
robustness`` and ``shortcuts``); a command that changes how fields are called and left them
as they were would leave the manifest describing another pipeline."""

from __future__ import annotations

from typing import Any, Callable

from edge.analysis.imagefile import read_rgb
from edge.evaluation.dataset import Sample
from edge.evaluation.degradation import inverted_cells
from edge.evaluation.robustness import run as run_suite, table as robustness_table
from edge.evaluation.shortcuts import run as run_shortcuts, table as shortcut_table
from edge.model.ood import OUT_OF_DISTRIBUTION
from edge.pipeline import Pipeline


def foreign_report(pipeline: Pipeline, samples: list[Sample]) -> dict[str, Any]:
    """How the device treats fields made foreign-looking (every white cell's lightness inverted,
    ``edge.evaluation.degradation.inverted_cells``): measured, never fitted on."""
    counts = {"fields": len(samples), "refused_out_of_distribution": 0, "classified": 0, "rejected_otherwise": 0}
    for sample in samples:
        result = pipeline.process(inverted_cells(read_rgb(sample.path), pipeline.bundle.segmentation), source="foreign")
        key = "classified" if result.classified else \
            "refused_out_of_distribution" if result.reasons == [OUT_OF_DISTRIBUTION] else "rejected_otherwise"
        counts[key] += 1
    return {"condition": "white cells' lightness inverted (dark rim, pale nucleus), colour untouched", **counts}


def test_suites(pipeline: Pipeline, test: list[Sample], train: list[Sample],
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """The manifest's ``robustness_test``, ``shortcuts_test`` and ``foreign_test`` (the last for
    a cell bundle only), measured through ``pipeline`` on ``test``; ``train`` gives the shortcut
    tests' colour baselines and stain statistics."""
    log("capture-condition suite on the test split")
    out: dict[str, Any] = {"robustness_test": run_suite(pipeline, test)}
    log(robustness_table(out["robustness_test"]))
    log("shortcut tests on the test split")
    out["shortcuts_test"] = run_shortcuts(pipeline, test, train, log=log)
    log(shortcut_table(out["shortcuts_test"]))
    if pipeline.bundle.kind == "cells":
        out["foreign_test"] = foreign_report(pipeline, test)
        log(f"foreign-looking test fields: {out['foreign_test']}")
    return out
