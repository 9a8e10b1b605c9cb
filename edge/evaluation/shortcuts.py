"""Does the model read the cells, or the smear around them? Four tests on real fields.

In this dataset a smear's look (stain, background, red cells) belongs to a patient and so
to a class, so accuracy on unseen fields of the same site cannot tell a model that reads
blasts from one that reads the slide. These tests can:

- *leukocyte-free*: every stained object inpainted away, leaving red cells and background.
  A model that reads cells has nothing to call positive.
- *swap*: the white cells of one field pasted on the background of a field of another
  class (its own cells inpainted away). The call must follow the cells.
- *restain*: the white cells' colours moved (Reinhard transfer in CIE-LAB) to the mean and
  spread of another class's stained pixels. The call must follow the cells' shape.
- *colour-only baselines*: a 5-nearest-neighbour classifier on three numbers (the mean
  L*a*b* of the normalised background, or of the stained pixels), trained on the training
  split: how much of the class the colour alone gives away in this data.

Every variant runs through the device pipeline (``edge.pipeline``) and is scored by the
label the device shows; a field the device refuses counts as not positive and not correct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import BENIGN, LABELS
from edge.analysis.normalisation import normalise
from edge.analysis.segmentation import segment
from edge.pipeline import Pipeline

#: Dilation (px, 224-px fields) around the stained mask: the cell's pale rim goes with it.
RIM = 3


@dataclass(frozen=True)
class Field:
    label: str
    rgb: np.ndarray  # raw field, RGB uint8
    mask: np.ndarray  # stained objects and their rim, bool


def load_field(path, label: str, params) -> Field:
    rgb = read_rgb(path)
    mask = segment(normalise(rgb).rgb, params).mask
    rim = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RIM + 1, 2 * RIM + 1))
    return Field(label, rgb, cv2.dilate(mask.astype(np.uint8), rim) > 0)


def without_cells(field: Field) -> np.ndarray:
    """The field with every stained object inpainted from its surroundings (Telea)."""
    bgr = cv2.cvtColor(field.rgb, cv2.COLOR_RGB2BGR)
    out = cv2.inpaint(bgr, field.mask.astype(np.uint8) * 255, 7, cv2.INPAINT_TELEA)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def swapped(cells_from: Field, background_from: Field) -> np.ndarray:
    """``cells_from``'s white cells on ``background_from``'s smear (its own cells removed)."""
    out = without_cells(background_from)
    if out.shape != cells_from.rgb.shape:
        out = cv2.resize(out, cells_from.rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
    out[cells_from.mask] = cells_from.rgb[cells_from.mask]
    return out


def stain_statistics(fields: list[Field]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the stained pixels' L*a*b* over ``fields``."""
    pixels = np.concatenate([cv2.cvtColor(f.rgb, cv2.COLOR_RGB2LAB)[f.mask].astype(np.float64) for f in fields])
    return pixels.mean(0), pixels.std(0)


def restained(field: Field, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Reinhard transfer of the cell pixels only, to the given L*a*b* mean and spread."""
    lab = cv2.cvtColor(field.rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    cells = lab[field.mask]
    if len(cells) == 0:
        return field.rgb.copy()
    moved = (cells - cells.mean(0)) / np.maximum(cells.std(0), 1e-3) * std + mean
    lab[field.mask] = moved
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def colour_features(field: Field) -> tuple[np.ndarray, np.ndarray]:
    """(background mean L*a*b*, stained-pixel mean L*a*b*) of the normalised field."""
    lab = cv2.cvtColor(normalise(field.rgb).rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    background = lab[~field.mask]
    stained = lab[field.mask] if field.mask.any() else background
    return background.mean(0), stained.mean(0)


def knn_accuracy(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str], k: int = 5) -> float:
    """k-nearest-neighbour accuracy on standardised features (a few numbers per field)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-9
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    distances = ((b[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(distances, axis=1)[:, :k]
    labels = np.array(train_y)
    correct = 0
    for row, truth in zip(nearest, test_y):
        values, counts = np.unique(labels[row], return_counts=True)
        correct += values[np.argmax(counts)] == truth
    return float(correct / max(1, len(test_y)))


def _shown(pipeline: Pipeline, rgb: np.ndarray) -> str:
    """What the device shows: a label, "uncertain", or "rejected"."""
    result = pipeline.process(rgb, source="shortcut")
    return result.screening.label if result.screening is not None else "rejected"


def run(pipeline: Pipeline, test: list, train: list, seed: int = 0,
        log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The four tests on ``test`` (samples with ``.path`` and ``.label``); ``train`` gives the
    colour baselines and the stain statistics of each class."""
    params = pipeline.bundle.segmentation
    rng = np.random.default_rng(seed)
    test_fields = [load_field(s.path, s.label, params) for s in test]
    train_fields = [load_field(s.path, s.label, params) for s in train]
    log(f"{len(test_fields)} fields of the split, {len(train_fields)} training fields loaded")
    truth = [f.label for f in test_fields]

    clean = [_shown(pipeline, f.rgb) for f in test_fields]
    free = [_shown(pipeline, without_cells(f)) for f in test_fields]
    log("clean and leukocyte-free done")

    by_class = {label: [i for i, f in enumerate(test_fields) if f.label == label] for label in LABELS}
    swap_truth, swap_shown, swap_followed_background = [], [], 0
    for i, f in enumerate(test_fields):
        others = [j for label, members in by_class.items() if label != f.label for j in members]
        j = int(rng.choice(others))
        shown = _shown(pipeline, swapped(f, test_fields[j]))
        swap_truth.append(f.label)
        swap_shown.append(shown)
        swap_followed_background += shown == test_fields[j].label
    log("swap done")

    stats = {label: stain_statistics([f for f in train_fields if f.label == label]) for label in LABELS}
    restain_shown = []
    for f in test_fields:
        other = LABELS[(LABELS.index(f.label) + 1 + int(rng.integers(len(LABELS) - 1))) % len(LABELS)]
        restain_shown.append(_shown(pipeline, restained(f, *stats[other])))
    log("restain done")

    train_bg, train_cells = map(np.array, zip(*[colour_features(f) for f in train_fields]))
    test_bg, test_cells = map(np.array, zip(*[colour_features(f) for f in test_fields]))
    train_y = [f.label for f in train_fields]

    def accuracy(shown: list[str], want: list[str]) -> float:
        return float(np.mean([s == t for s, t in zip(shown, want)]))

    def positive(shown: list[str]) -> int:
        return sum(s in LABELS and s != BENIGN for s in shown)

    return {
        "n": len(test_fields),
        "model_id": pipeline.bundle.model_id,
        "clean": {"accuracy": accuracy(clean, truth), "positive": positive(clean), "rejected": clean.count("rejected")},
        "leukocyte_free": {"positive": positive(free), "positive_share": positive(free) / len(free),
                           "subtype_named": sum(s == t for s, t in zip(free, truth) if t != BENIGN),
                           "rejected": free.count("rejected"), "uncertain": free.count("uncertain")},
        "swap": {"accuracy": accuracy(swap_shown, swap_truth), "followed_background": swap_followed_background,
                 "rejected": swap_shown.count("rejected")},
        "restain": {"accuracy": accuracy(restain_shown, truth), "rejected": restain_shown.count("rejected")},
        "colour_only": {"background_knn_accuracy": knn_accuracy(train_bg, train_y, test_bg, truth),
                        "cell_colour_knn_accuracy": knn_accuracy(train_cells, train_y, test_cells, truth)},
    }


def table(report: dict[str, Any]) -> str:
    c, lf, sw, rs, co = (report[k] for k in ("clean", "leukocyte_free", "swap", "restain", "colour_only"))
    n = report["n"]
    rows = [
        "| test | what the device shows | target |",
        "|---|---|---|",
        f"| clean | accuracy {100 * c['accuracy']:.1f}% ({c['rejected']} rejected) | |",
        f"| leukocyte-free | {lf['positive']} of {n} called positive ({100 * lf['positive_share']:.1f}%); "
        f"{lf['subtype_named']} named the true subtype; {lf['rejected']} rejected | <= 1% positive |",
        f"| swap | accuracy {100 * sw['accuracy']:.1f}% against the cells' class; {sw['followed_background']} followed "
        f"the background; {sw['rejected']} rejected | within 3 points of clean |",
        f"| restain | accuracy {100 * rs['accuracy']:.1f}% ({rs['rejected']} rejected) | within 3 points of clean |",
        f"| colour only (5-NN, the data's confound) | background L*a*b*: {100 * co['background_knn_accuracy']:.1f}%; "
        f"white cells' mean L*a*b*: {100 * co['cell_colour_knn_accuracy']:.1f}% | (not a model) |",
    ]
    return "\n".join(rows)
