"""The model card, generated from the manifest so the two can never disagree."""

from __future__ import annotations

from typing import Any

from edge.labels import DISPLAY_NAMES, LABELS

MODEL_CARD = "MODEL_CARD.md"

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


def render_model_card(manifest: dict[str, Any]) -> str:
    split = manifest.get("split", {})
    metrics = manifest.get("metrics", {})
    cal = manifest.get("calibration", {})
    tools = manifest.get("tools", {})
    edgetpu = manifest.get("edgetpu", {})
    classes = "\n".join(f"- `{label}`: {DISPLAY_NAMES[label]}" for label in LABELS)
    test_metrics = {name: m for name, m in metrics.items() if name.endswith("test") and "confusion" in m}
    confusions = "\n\n".join(f"**{name}**\n\n{_confusion(m)}" for name, m in test_metrics.items())
    return f"""# BlastScope model card: `{manifest.get('model_id')}`

Generated from `manifest.json` by `blastscope-convert` ({tools.get('blastscope', '?')}). Every figure
below was measured by the command that built this bundle (`{manifest.get('command', 'blastscope-convert build')}`);
`blastscope-edge evaluate --bundle <this folder> --data <dataset> --json` reproduces the int8 test row.

## Intended use
A **screening aid** for peripheral blood smears of suspected B-cell acute lymphoblastic
leukemia, run offline on a Raspberry Pi with a Coral Edge TPU. It flags fields for review
before a bone-marrow biopsy is ordered. **It is not a diagnosis**: every positive, uncertain
or clinically suspicious case needs a hematologist's read and confirmatory testing
(flow cytometry). Not for use on bone-marrow aspirates, other stains, or other leukemias.

## Classes
{classes}

## Model
Dual-input MobileNetV2 (ImageNet start): one branch sees the field, the other the same
field segmented (CIE-LAB, exact 2-means on a*, morphology, small-object removal; parameters
in the manifest). Branch features are concatenated, then a softmax over 4 classes.
Full-integer quantized (uint8 inputs/output, int8 operations), batch 1, 224x224x3 inputs.

## Data
{DATASET_CITATION}. 224x224 "Original" images; one camera and one staining protocol.

## Split
{split.get('method', 'n/a')}. Seed {split.get('seed')}. Counts: {split.get('counts')}.
Validation was used for early stopping and calibration; test was used only for the figures below.

## Metrics (test split)
{_metrics_table(test_metrics)}

The int8 rows score the label the device shows (`edge.screening.screen`):
accuracy counts uncertain and rejected fields as not correct; sensitivity is malignant fields
called positive, specificity benign fields called negative. *Flagged* = malignant fields called
positive or uncertain (not cleared), *cleared* = benign fields called negative; uncertain fields
go to a human read. *Rejected* fields failed the quality gate and count as errors everywhere.
Float rows: {metrics.get('float_test', {}).get('scored', 'as the int8 rows')}. Intervals are Wilson 95%.

{confusions}

## Case call (one slide)
{_cases(manifest)}

## Calibration
Temperature {cal.get('temperature')} (fitted on validation); malignant threshold {cal.get('malignant_threshold')};
uncertain band [{cal.get('uncertain_low')}, {cal.get('uncertain_high')}) of malignant probability.

## Edge TPU
{edgetpu.get('summary', 'not compiled')}

## Limitations
- Trained and tested on images from a single hospital, camera and staining protocol. Expect a
  shift on a Pi camera through an eyepiece (vignetting, white balance, focus); validate locally
  on a set of known cases before clinical use.
- The split groups consecutive file numbers as a proxy for patients; patient identities are
  not available, so some leakage across split boundaries cannot be excluded.
- About 15% of the original dataset is held out by the dataset's curators and was not used.
- Field-level classification: a patient-level decision must combine many fields and a human read.
"""
