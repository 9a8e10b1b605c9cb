"""A site reference (issue 33) on real fields. Another laboratory's stain is stood in for by
a Reinhard restain of the cells of real benign validation fields of all-pbs-224 to a pinker,
paler stain, which the shipped bundle's appearance check refuses field after field (measured
below). A reference fitted on twelve "slides" of such copies lets them through, still refuses
a field unlike both the training site and this clinic (cells' lightness inverted), and a
verification on *other* restained slides, benign and malignant, then has a call for every
slide to decide on. Runs the device pipeline (int8, CPU) on real images; needs ../shared."""

from __future__ import annotations


import numpy as np
import pytest

from edge.analysis.case import case_call
from edge.analysis.verification import Criteria, Slide, evaluate
from edge.evaluation.dataset import load_dataset
from edge.evaluation.degradation import inverted_cells
from edge.evaluation.evaluate import samples_for_split
from edge.evaluation.shortcuts import load_field, restained, stain_statistics
from edge.model.bundle import default_bundle_path, load_bundle
from edge.model.ood import OUT_OF_DISTRIBUTION
from edge.model.site_reference import MIN_SLIDES, SiteReference, SlideCells, fit_reference
from edge.pipeline import Pipeline

from conftest import SHARED

DATA = SHARED / "datasets" / "all-pbs-224"
FIELDS_PER_SLIDE = 3


@pytest.fixture(scope="module")
def clinic():
    """The shipped pipeline, and the validation split's fields restained to the "clinic's" stain,
    grouped three to a slide: twelve benign slides for the reference, the rest to verify on."""
    if not DATA.is_dir():
        pytest.skip(f"all-pbs-224 not found at {DATA} (../shared is absent)")
    bundle = load_bundle(default_bundle_path())
    pipeline = Pipeline.on_cpu(bundle)
    val = samples_for_split(bundle, load_dataset(DATA), "val")
    benign = [s for s in val if s.label == "benign"]
    malignant = [s for s in val if s.label != "benign"][::6]
    fields = {s.key: load_field(s.path, s.label, bundle.segmentation) for s in benign + malignant}
    mean, std = stain_statistics([fields[s.key] for s in benign])
    stain = (mean + np.array([20.0, 40.0, 15.0]), std * np.array([0.6, 1.0, 1.0]))  # pinker and paler

    def slides(samples, size):
        copies = [restained(fields[s.key], *stain) for s in samples]
        return [copies[i:i + size] for i in range(0, len(copies) - size + 1, size)]

    n_ref = 12 * FIELDS_PER_SLIDE
    rule = bundle.case_rule
    assert rule is not None
    # a verification slide is read as the device reads a case, field after field until its rule has
    # a call (a refused or uncertain field is followed by the next): up to six spare fields a slide
    case = rule.min_fields + 6
    return pipeline, slides(benign[:n_ref], FIELDS_PER_SLIDE), slides(benign[n_ref:], case), slides(malignant, case)


def _refused(pipeline: Pipeline, images) -> float:
    results = [pipeline.process(rgb) for rgb in images]
    return sum(r.reasons == [OUT_OF_DISTRIBUTION] for r in results) / len(results)


def test_a_reference_lets_the_clinics_stain_through_and_still_refuses_what_is_unlike_both(clinic, tmp_path):
    pipeline, reference_slides, other_benign, other_malignant = clinic
    fields = [rgb for slide in reference_slides for rgb in slide]
    assert _refused(pipeline, fields) >= 0.6  # the problem: the clinic's stain is refused as foreign

    measured = []
    for i, slide in enumerate(reference_slides):
        cells = [m for m in (pipeline.measure_cells(rgb) for rgb in slide) if m is not None]
        measured.append(SlideCells(f"slide-{i + 1}", [m[0] for m in cells], [m[1] for m in cells]))
    with pytest.raises(ValueError, match=f"at least {MIN_SLIDES}"):
        fit_reference(measured[:MIN_SLIDES - 1], pipeline.bundle.model_id)
    reference = fit_reference(measured, pipeline.bundle.model_id)
    reference.save(tmp_path / "site.json")
    referenced = Pipeline(pipeline.bundle, pipeline.backends, site_reference=SiteReference.load(tmp_path / "site.json"))

    assert _refused(referenced, fields) <= 0.1  # fitted leave one slide out: its own slides pass
    held_out = [rgb for slide in other_benign for rgb in slide]
    assert _refused(referenced, held_out) <= 0.15  # and so do other slides of the clinic's stain
    unlike_both = [inverted_cells(rgb, pipeline.bundle.segmentation) for rgb in held_out]
    assert _refused(referenced, unlike_both) >= 0.9  # a field unlike both is still refused

    # a verification on other slides now has a call for every slide, so it can pass or fail
    rule = pipeline.bundle.case_rule
    assert rule is not None
    slides = []
    for truth, group in (("negative", other_benign), ("positive", other_malignant)):
        for n, slide in enumerate(group):
            read: list[dict] = []
            for rgb in slide:
                read.append(referenced.process(rgb).to_dict())
                if (call := case_call(read, rule).call) != "pending":
                    break
            slides.append(Slide(len(slides) + 1, f"{truth[0]}{n}", truth, "", call))
    undecided = [(s.code, s.call) for s in slides if s.call not in ("positive", "negative", "uncertain")]
    assert undecided == []
    outcome = evaluate(slides, Criteria(min_positive=1, min_negative=1, min_challenging=0))
    assert outcome.positive_done == len(other_malignant) and outcome.negative_done == len(other_benign)
    assert outcome.sensitivity.successes == len(other_malignant)  # no restained blast slide called negative


def test_a_reference_of_another_model_or_no_reference_file_is_refused(clinic, tmp_path):
    pipeline = clinic[0]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a usable site reference"):
        SiteReference.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read"):
        SiteReference.load(tmp_path / "missing.json")
    rng = np.random.default_rng(0)
    slides = [SlideCells(f"s{i}", [rng.normal(size=(6, 11))], [rng.normal(size=(6, 8))]) for i in range(MIN_SLIDES)]
    other = fit_reference(slides, "another-model")
    with pytest.raises(ValueError, match="fit a new reference with this model"):
        Pipeline(pipeline.bundle, pipeline.backends, site_reference=other)
