"""The model card, generated from the manifest so the two can never disagree."""

from __future__ import annotations

from typing import Any

from edge.analysis.labels import DIFFERENTIAL, DISPLAY_NAMES, LABELS
from edge.analysis.screening import FEW_CELLS
from edge.evaluation.robustness import table as robustness_table

from converter.gate import gate_table


DATASET_CITATION = (
    'Aria M., Ghaderzadeh M., Bashash D., Abolghasemi H., Asadi F., Hosseini A. "Acute Lymphoblastic '
    'Leukemia (ALL) image dataset", Kaggle 2021, DOI 10.34740/KAGGLE/DSV/2175623'
)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ci(ci: list[float]) -> str:
    return f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = ["| model | n | 4-class accuracy (95% CI) | malignant sensitivity (95% CI) | benign specificity (95% CI) "
            "| malignant flagged | benign cleared | uncertain | rejected |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        s = m["screening"]
        rows.append(
            f"| {name} | {m['n']} | {_pct(m['accuracy'])} ({_ci(m['accuracy_ci95'])}) | "
            f"{_pct(m['malignant_sensitivity'])} ({_ci(m['malignant_sensitivity_ci95'])}) | "
            f"{_pct(m['benign_specificity'])} ({_ci(m['benign_specificity_ci95'])}) | "
            f"{_pct(s['malignant_flagged'])} | {_pct(s['benign_cleared'])} | {m['uncertain']} | {m['unclassified']} |"
        )
    return "\n".join(rows)


def _confusion(m: dict[str, Any]) -> str:
    extra = [name for name in ("uncertain_by_class", "rejected_by_class") if name in m]
    rows = ["| true \\ shown | " + " | ".join(list(LABELS) + [e.split("_")[0] for e in extra]) + " |",
            "|---" * (len(LABELS) + len(extra) + 1) + "|"]
    for i, (label, row) in enumerate(zip(LABELS, m["confusion"])):
        rows.append(f"| {label} | " + " | ".join([str(v) for v in row] + [str(m[e][i]) for e in extra]) + " |")
    return "\n".join(rows)


def _float_calibration_note(manifest: dict[str, Any]) -> str:
    return ", with the float model's own calibration" if manifest.get("calibration_fit", {}).get("float") else ""


def _split_use(manifest: dict[str, Any]) -> str:
    history = manifest.get("training", {}).get("history", {})
    if "patience" in history.get("config", {}):
        return "Validation was used for early stopping and calibration; test was used only for the figures below."
    return ("Training ran a fixed schedule (no early stopping), so validation did not choose the weights; it was "
            "used for calibration, the case rule and the gate limits. Test was used only for the figures below.")


def _cases(manifest: dict[str, Any]) -> str:
    rule = manifest.get("case_rule")
    cases = manifest.get("metrics", {}).get("cases_test")
    if not rule:
        return "This bundle has no case rule (built before cases)."
    rows = [f"Rule: a binomial count of the fields' own calls. Benign field false-positive rate "
            f"{rule['field_fp_rate']} and malignant field detection rate {rule['field_tp_rate']} ({rule['fitted_on']}; "
            f"bounded to at least 0.05 and at most 0.95); a case is positive when a benign slide would give that many "
            f"positive fields with probability <= {rule['alpha']}, negative when a malignant slide would give that few "
            f"with probability <= {rule['beta']}, uncertain between; at least {rule['min_fields']} fields.", ""]
    if count := rule.get("count"):
        rows[-1:-1] = ["", f"The count (issue 32): a case is positive when the model's blasts reach "
                       f"{_pct(count['refer_at'])} of the recognised white cells (or the field count above says "
                       f"positive), negative when they stay below {_pct(count['clear_below'])} of at least "
                       f"{count['min_white_cells']} white cells (the higher of the model's and the reviewed share), "
                       f"uncertain between; fitted on {count['fitted_on']}.", "", _count_fit(count.get("fit") or {})]
    if cases:
        rows += ["| fields per case | malignant cases | benign cases | case sensitivity (95% CI) | "
                 "case specificity (95% CI) | uncertain or pending |", "|---|---|---|---|---|---|"]
        for c in cases:
            sens = "n/a" if c["sensitivity"] is None else f"{_pct(c['sensitivity'])} ({_ci(c['sensitivity_ci95'])})"
            spec = "n/a" if c["specificity"] is None else f"{_pct(c['specificity'])} ({_ci(c['specificity_ci95'])})"
            if c["pending"] == c["n"]:
                sens = spec = f"none called: below the rule's minimum of {rule['min_fields']} fields"
            rows.append(f"| {c['size']} | {c['n_malignant']} | {c['n_benign']} | {sens} | {spec} | {c['uncertain']} |")
        rows += ["", "Cases are non-overlapping runs of consecutive fields from one patient-proxy block of the "
                 "test split; with few benign blocks the specificity intervals are wide. Reproduce with "
                 "`blastscope-edge evaluate --bundle <this folder> --data <dataset> --case-size 1 3 5 10`."]
    return "\n".join(rows)


def _count_fit(fit: dict[str, Any]) -> str:
    """How the count rule's limits came out, and its cases on the blocks it was fitted on."""
    if not fit:
        return ""
    blocks = fit.get("blocks", {})
    rows = [f"Fitted on {blocks.get('benign')} benign and {blocks.get('malignant')} malignant blocks ({fit.get('cases')}): "
            f"clear below {fit['clear_below']['point']} at the point, {fit['clear_below']['block_bootstrap_5th']} at the "
            f"bootstrap's 5th percentile; refer at {fit['refer_at']['point']}, {fit['refer_at']['block_bootstrap_95th']} at "
            f"its 95th; the safe end of each is used, and a case is never cleared above the referral limit. "
            f"The fewest white cells: {fit.get('min_white_cells')}."]
    in_sample = fit.get("cases_in_sample") or []
    if in_sample:
        rows += ["", "Random cases within each block, on the same blocks (in-sample for the limits):", "",
                 "| fields per case | benign cleared | benign called positive | lowest benign block | "
                 "malignant positive | malignant called negative | lowest malignant block |", "|---|---|---|---|---|---|---|"]
        for c in in_sample:
            b, m = c.get("benign", {}), c.get("malignant", {})
            rows.append(f"| {c['size']} | {_pct(b.get('right'))} | {_pct(b.get('wrong'))} | {_pct(b.get('right_lowest_block'))} "
                        f"| {_pct(m.get('right'))} | {_pct(m.get('wrong'))} | {_pct(m.get('right_lowest_block'))} |")
    return "\n".join(rows)


def _cell_count(manifest: dict[str, Any]) -> str:
    """The count rule (``Calibration.min_cells_to_clear``) and the validation counts it was fitted on."""
    count = manifest.get("calibration", {}).get("min_cells_to_clear", 1)
    fit = manifest.get("calibration_fit", {}).get("min_cells_to_clear")
    if count <= 1 and not fit:
        return ""
    text = (f"\n\nA negative field call rests on at least {count} recognised white cell(s): a field that would be "
            f"called negative on fewer is shown uncertain (\"{FEW_CELLS}\"), never negative; a positive call is "
            "never held back.")
    if not fit:
        return text
    shown = [r for r in fit["negative_calls_by_cells"] if r["cells"] <= 10]
    more = [r for r in fit["negative_calls_by_cells"] if r["cells"] > 10]
    rows = "\n".join([f"| {r['cells']} | {r['malignant']} | {r['benign']} |" for r in shown]
                      + ([f"| more than 10 | {sum(r['malignant'] for r in more)} | {sum(r['benign'] for r in more)} |"]
                         if more else []))
    return text + f""" Fitted on the {fit['fitted_on']} ({fit['fields']} field-conditions): {fit['rule']}.
Negative calls without the rule, by the recognised cells they rested on:

| recognised cells | malignant fields called negative | benign fields called negative |
|---|---|---|
{rows}"""


def _calibration(manifest: dict[str, Any]) -> str:
    cal = manifest.get("calibration", {})
    text = (f"Temperature {cal.get('temperature')} (fitted on validation, rounded before the thresholds were fitted); "
            f"malignant threshold {cal.get('malignant_threshold')}; uncertain band [{cal.get('uncertain_low')}, "
            f"{cal.get('uncertain_high')}) of malignant probability.")
    fit = manifest.get("calibration_fit", {}).get("int8")
    if not fit:
        return text
    sens, spec = fit["sensitivity_threshold"], fit["specificity_threshold"]
    float_cal = manifest["calibration_fit"].get("float", {}).get("calibration", {})
    band = ("\n\nThe uncertain band spans every place either threshold fell in 90% of the bootstrap resamples: a "
            "field scored where the operating point itself is unsure is called uncertain (a human read), never "
            "negative." if fit.get("band") == "bootstrap" else "")
    floats = (f"""

The float model was calibrated on its own validation outputs (temperature {float_cal.get('temperature')},
threshold {float_cal.get('malignant_threshold')}, band [{float_cal.get('uncertain_low')}, {float_cal.get('uncertain_high')}))."""
              if float_cal else "")
    source = fit.get("fitted_on", "validation split")
    where = "validation" if source == "validation split" else "the fields it was fitted on"
    blocks = (f"; resampled as {fit['resampled']}: {fit.get('blocks_malignant')} malignant and "
              f"{fit.get('blocks_benign')} benign blocks" if "resampled" in fit and fit["resampled"] != "fields" else "")
    return text + _cell_count(manifest) + f"""

Fitted on: {source}{blocks}. Targets: sensitivity {fit['targets']['sensitivity']}, specificity
{fit['targets']['specificity']} ({fit['validation_malignant']} malignant, {fit['validation_benign']} benign fields).
Each threshold is the mean over {fit['bootstrap_resamples']} bootstrap resamples of {where} (a single order
statistic moves a long way with one field more or less):

| threshold | bagged (used) | bootstrap 90% range | single fit |
|---|---|---|---|
| sensitivity (low end of the band) | {sens['bagged']} | {sens['range_90'][0]}-{sens['range_90'][1]} | {sens['single_fit']} |
| specificity (high end of the band) | {spec['bagged']} | {spec['range_90'][0]}-{spec['range_90'][1]} | {spec['single_fit']} |{band}{floats}"""


def _gate(manifest: dict[str, Any]) -> str:
    gate = manifest.get("quality_gate")
    if not gate:
        return "This bundle has no fitted gate limits; the device uses its defaults."
    limits = ", ".join(f"`{k}` {v}" for k, v in gate["limits"].items())
    kept = (" The limits and the ladders below were measured when the gate was fitted, by the build; the "
            "commands that re-measured the bundle since kept the gate and did not run the ladders again."
            if manifest.get("history") else "")
    return f"""Limits: {limits}. Fitted on the {gate['fitted_on']}.{kept} Focus: {gate['focus_rule']}
(criteria: accuracy over classified fields more than {100 * gate['criteria']['accuracy_drop']:.0f} points
below clean, or malignant sensitivity below {100 * gate['criteria']['min_sensitivity']:.0f}%). Noise, overexposure
and the field-stop check sit just above every clean field (clean extremes: {gate['clean']}).

Each ladder below runs the device pipeline with that one check switched off, so the accuracy
columns show what the model does without the check, and the last column shows, per class, the share of
fields the fitted limit rejects (the check for a class-independent gate: a level is either passed
or rejected for every class alike, apart from the transition between the two).

{gate_table(gate)}"""


def _robustness(manifest: dict[str, Any]) -> str:
    report = manifest.get("robustness_test")
    if not report:
        return "Not measured for this bundle."
    return f"""Every field of the test split under each named, seeded capture condition, through the device
pipeline (field of view, quality gate, normalisation, segmentation, inference, screening), scoring the label
the device shows. *All* counts a rejected field as not correct; *classified* leaves rejected fields out. What
matters for screening is the last column: malignant fields called negative without a warning. Reproduce with
`blastscope-edge robustness --bundle <this folder> --data <dataset>`.

{robustness_table(report)}

What the table means: a rejected field costs the technician one more field, with a reason to act on; a
classified field under a condition should be read as well as a clean one. The conditions are simulated on
the dataset's own fields; they are not images from a Pi camera, and they do not reproduce another laboratory's
stain or microscope."""


FIELD_MODEL = """Dual-input MobileNetV2 (ImageNet start). Each field is first normalised to its smear
background (per-channel gains that bring the brightest quarter of the field to one neutral
level; `edge/analysis/normalisation.py`, the same code in training and on the device); one branch sees
the normalised field, the other the same field segmented (CIE-LAB, exact 2-means on a*,
morphology, small-object removal; parameters in the manifest). Branch features are concatenated, then a softmax over 4 classes.
Full-integer quantized (uint8 inputs/output, int8 operations), batch 1, 224x224x3 inputs."""


def _model(manifest: dict[str, Any]) -> str:
    if manifest.get("kind") != "cells":
        return FIELD_MODEL
    c = manifest.get("cells", {})
    return f"""Per-cell dual-input MobileNetV2 (ImageNet start), reading **white cells, not fields**
(`edge/analysis/cells.py`). Each field is normalised to its smear background and segmented
(CIE-LAB, exact 2-means on a*{_segmentation(manifest.get("segmentation", {}))}); the stain mask's connected components, split by a watershed on
the distance transform and kept between {c.get('min_cell_um')} and {c.get('max_cell_um')} um, are the white
cells. The field's scale comes from its red cells (an autocorrelation ruler; training median
{c.get('model_ruler_px')} px at {c.get('model_px_per_um')} px/um); a field beyond {c.get('max_scale_factor')}x of it is refused
as the wrong magnification. Each cell is cut as a {c.get('crop_um')} um square at {c.get('crop_px')} px: input 1 is the
cell and a 1.5 um rim in grey with the cell's own contrast standardised, everything further out
white; input 2 is the cell's own mask applied, the rest black. **Colour never reaches the model**
(the cells' mean colour alone predicts the class in this dataset), and training jitters the
stain in optical density on top. Labels are weak: every cell of a field takes the field's class;
the field call pools the cells (renormalised geometric mean of the cells' probabilities, cells
that fail the out-of-distribution check left out). A 64-wide embedding is a second output.
Full-integer quantized (uint8 inputs and outputs, int8 operations), batch 1, {_views(c.get('views', 1))}"""


def _segmentation(seg: dict[str, Any]) -> str:
    element = seg.get("element", "ellipse")
    shape = "a round disc" if element == "disc" else "OpenCV's elliptic element"
    text = f", opened and closed with {shape}"
    if seg.get("resplit"):
        text += (", and split a second time when the two centres are close, which finds the one or two white "
                 "cells of a field whose first split is the background against the red cells")
    return text


def _views(views: int) -> str:
    if views == 1:
        return "one invoke per cell, upright."
    return (f"one invoke per cell in each of {views} orientations of the square (turns and mirror images), "
            "pooled by their geometric mean, so a turned cell gets the same call; the out-of-distribution check "
            "reads the upright view's embedding.")


def _shortcuts(manifest: dict[str, Any]) -> str:
    report = manifest.get("shortcuts_test")
    if not report:
        return "Not measured for this bundle (`blastscope-edge shortcuts` measures it)."
    from edge.evaluation.shortcuts import table

    return (f"From `blastscope-edge shortcuts` on the test split ({report['n']} fields), through the device "
            "pipeline, scoring the label shown:\n\n" + table(report))


def _ood(manifest: dict[str, Any]) -> str:
    ood, fit = manifest.get("ood"), manifest.get("ood_fit", {})
    if not ood:
        return "None: this bundle answers for every field it is given."
    per = ", ".join(f"{k} {v}" for k, v in fit.get("per_condition", {}).items())
    text = (f"- **Embedding, per cell.** Mahalanobis distance of a cell's embedding from {fit.get('training_cells')} "
            f"training cells' (covariance shrunk 10% toward its diagonal); limit {ood.get('limit')}, the "
            f"{fit.get('percentile')}th percentile of {fit.get('fitted_on')}: {per}. A cell beyond it is shown as not "
            "recognised and left out of the field call; a field where most cells are beyond it is refused: \"these "
            "cells do not look like the slides this model was trained on\".")
    looks, looks_fit = manifest.get("ood_appearance"), manifest.get("ood_appearance_fit", {})
    if looks:
        worst = ", ".join(f"{k} {v['max']}" for k, v in looks_fit.get("per_condition", {}).items())
        text += (f"\n- **Appearance, per field.** Each cell's {len(looks['features'])} appearance numbers "
                 f"({', '.join(looks['features'])}; `edge.analysis.appearance`), standardised, Mahalanobis distance "
                 f"from {looks_fit.get('training_cells')} training cells; a field whose median cell distance exceeds "
                 f"{looks['limit']} is refused with the same message. The limit is {looks_fit.get('fitted_on')} "
                 f"(highest per condition: {worst}).")
    foreign = manifest.get("foreign_test")
    if foreign:
        text += (f"\n- **Foreign-looking fields (test split, measured only):** {foreign['condition']}: "
                 f"{foreign['refused_out_of_distribution']} of {foreign['fields']} refused as out of distribution, "
                 f"{foreign['classified']} classified, {foreign['rejected_otherwise']} rejected for another reason.")
    return text


def _cell_limitations(manifest: dict[str, Any]) -> str:
    if manifest.get("kind") != "cells":
        return ""
    if manifest.get("segmentation", {}).get("resplit"):
        faint = """- Fields whose stain mask finds no white cell even when split a second time are refused ("no
  white cells in view, and the stain is faint"), not read: on this dataset they are Pro-B fields."""
    else:
        faint = """- Faintly stained fields whose white cells the stain mask misses are refused ("no white cells in
  view"), not read: on this dataset they are Pro-B fields."""
    return """- **The out-of-distribution checks are no guarantee.** They pass the benign capture conditions
  they were fitted on and refuse cells whose dark parts are not the stained ones (inverted
  lightness, figures above), but they have only been shown synthetic foreign cells: no other
  laboratory's smear was available to fit or measure them. Another laboratory's cells may still
  be read without a warning; verify the device on your own slides before relying on it.
""" + faint + """
- The subtypes (Early Pre-B, Pre-B, Pro-B) are defined by flow cytometry, not by morphology; the
  model's subtype is a pattern to check, and Pre-B and Early Pre-B are confused.
- Cell labels are weak (every cell of a field takes the field's class), so a reactive lymphocyte
  in a malignant field is counted as a blast by the training labels."""


def commands(manifest: dict[str, Any]) -> str:
    """The build command, then each command that re-measured or extended the bundle."""
    build = f"`{manifest.get('command', 'blastscope-convert build')}`"
    return build + "".join(f", then `{h['command']}` ({h['at']})" for h in manifest.get("history", []))


def _differential(manifest: dict[str, Any]) -> str:
    """The differential's figures per site and class (issue 32), the site check and the data's
    limits; empty for a 4-class bundle."""
    cells = manifest.get("differential_cells")
    if not cells:
        return ""
    data = manifest.get("differential_data", {})
    rows = ["| cells | n | accuracy (classes) | accuracy (blasts merged) | non-blast cells called blast | blast cells called blast |",
            "|---|---|---|---|---|---|"]
    for name, r in cells.items():
        rows.append(f"| {name} | {r['cells']} | {_pct(r['accuracy'])} | {_pct(r['accuracy_blasts_merged'])} | "
                    f"{_pct(r['non_blast_called_blast'])} | {_pct(r['blast_called_blast'])} |")
    recall = ["| cells | " + " | ".join(DIFFERENTIAL) + " |", "|---|" + "---|" * len(DIFFERENTIAL)]
    for name, r in cells.items():
        recall.append(f"| {name} | " + " | ".join(_pct(r["recall"].get(k)) if k in r["recall"] else "" for k in DIFFERENTIAL)
                      + " |")
    site = manifest.get("site_check")
    site_text = (f"Linear probe telling the sites apart among benign lymphoid cells "
                 f"({site['cells_per_site']} a site): AUC {site['embedding_auc']:.3f} on the model's embedding "
                 f"(target <= {site['target_auc']}: {'met' if site['passes'] else 'NOT met'}), "
                 f"{site['raw_crop_auc']:.3f} on the raw grey crops (`blastscope-edge shortcuts --pbc`)."
                 if site else "Not measured on this bundle (`blastscope-edge shortcuts --data ... --pbc ...`).")
    sites = "\n".join(f"- `{k}`: {v}" for k, v in data.get("sites", {}).items())
    limits = "\n".join(f"- {x}" for x in data.get("limits", []))
    return f"""
## Differential (cells of two sites)
Each white cell is read as one of: {', '.join(f'`{k}`' for k in DIFFERENTIAL)}; "not a white cell"
is never counted, and a blast's B-ALL subtype is a hint (the subtypes are defined by flow
cytometry). Float model on the cells of each split (all-pbs-224 cells carry their field's class,
so "accuracy" there is against weak labels; pbc-normal is split by image, not by donor):

{chr(10).join(rows)}

Recall per class:

{chr(10).join(recall)}

Sites:
{sites}

**Site check.** {site_text}

Limits of the data:
{limits}
"""


def render_model_card(manifest: dict[str, Any]) -> str:
    split = manifest.get("split", {})
    metrics = manifest.get("metrics", {})
    tools = manifest.get("tools", {})
    edgetpu = manifest.get("edgetpu", {})
    classes = "\n".join(f"- `{label}`: {DISPLAY_NAMES[label]}" for label in LABELS)
    test_metrics = {name: m for name, m in metrics.items() if name.endswith("test") and "confusion" in m}
    confusions = "\n\n".join(f"**{name}**\n\n{_confusion(m)}" for name, m in test_metrics.items())
    return f"""# BlastScope model card: `{manifest.get('model_id')}`

Generated from `manifest.json` by `blastscope-convert` ({tools.get('blastscope', '?')}). Every figure
below was measured by the commands that made this bundle ({commands(manifest)});
`blastscope-edge evaluate --bundle <this folder> --data <dataset> --json` reproduces the int8 test row,
and with `--split val` the int8 validation figures the manifest records (`metrics.int8_val`).

## Intended use
A **screening aid** for peripheral blood smears of suspected B-cell acute lymphoblastic
leukemia, run offline on a Raspberry Pi with a Coral Edge TPU. It flags fields for review
before a bone-marrow biopsy is ordered. **It is not a diagnosis**: every positive, uncertain
or clinically suspicious case needs a hematologist's read and confirmatory testing
(flow cytometry). Not for use on bone-marrow aspirates, other stains, or other leukemias.

## Classes
{classes}

## Model
{_model(manifest)}

## Data
{DATASET_CITATION}. 224x224 "Original" images; one camera and one staining protocol.

## Split
{split.get('method', 'n/a')}. Seed {split.get('seed')}. Counts: {split.get('counts')}.
{_split_use(manifest)}

## Metrics (test split)
{_metrics_table(test_metrics)}

The int8 rows score the label the device shows (`edge.analysis.screening.screen`):
accuracy counts uncertain and rejected fields as not correct; sensitivity is malignant fields
called positive, specificity benign fields called negative. *Flagged* = malignant fields called
positive or uncertain (not cleared), *cleared* = benign fields called negative; uncertain fields
go to a human read. *Rejected* fields failed the quality gate and count as errors everywhere.
Float rows: {metrics.get('float_test', {}).get('scored', 'as the int8 rows')}{_float_calibration_note(manifest)}. Intervals are Wilson 95%.

{confusions}

## Shortcut tests (test split): does it read the cells?
{_shortcuts(manifest)}

## Out-of-distribution checks
{_ood(manifest)}

## Case call (one slide)
{_cases(manifest)}

## Calibration
{_calibration(manifest)}

## Quality gate
{_gate(manifest)}

## Capture conditions (test split)
{_robustness(manifest)}

{_differential(manifest)}
## Edge TPU
{edgetpu.get('summary', 'not compiled')}

## Limitations
- **Validated on one site's images only.** That means: every figure on this card comes from
  fields of one hospital's slides, one camera and one staining protocol, split by patient proxy.
  It says how the model does on more slides like those, not on yours. Trained, calibrated and
  tested on images from one hospital, one camera and one staining protocol. It has not been validated on any other laboratory: on ALL-IDB2 (another
  hospital, camera and stain; single-cell crops, so not like-for-like) an earlier model of the same
  design separated blasts from normal cells at chance. Nothing here shows that it transfers.
- **A clinic must check it on its own known slides before relying on it**: capture fields of slides
  whose diagnosis is known (flow cytometry), put them in class folders, and run
  `blastscope-edge evaluate --data <folder>` on the device; compare sensitivity and specificity
  with the table above. Re-check after changing the microscope, camera, lamp or stain.
- The capture-condition table is simulated on this dataset's fields; real eyepiece images differ.
- The split groups runs of file numbers and near-duplicate fields as a proxy for patients; patient
  identities are not available, so some leakage across split boundaries cannot be excluded.
- About 15% of the original dataset is held out by the dataset's curators and was not used.
- Field-level classification: a patient-level decision must combine many fields and a human read.
{_cell_limitations(manifest)}"""
