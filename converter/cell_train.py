"""Training the cell model on weakly labelled cells, with the stain taken away by design
and jittered on top.

The cells' colour carries the patient (and so the class) in this dataset, so colour must
not be learnable: inputs are grey and standardised per cell (``edge.analysis.cells``), and
before that each crop's stain is jittered in optical density (haematoxylin/eosin-like
channel scaling, as HED jitter does), its lamp and contrast varied, some blurred or noised.
Rotations and flips are free: a cell has no orientation. Classes are balanced per batch by
sampling, since the fields per class and cells per field differ. The schedule is fixed
(no early stopping); validation is logged, never used to choose weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import cv2
import keras
import numpy as np

from edge.analysis.cells import CellCrops, model_inputs
from edge.analysis.labels import LABELS

from converter.cell_data import CellSet
from converter.cell_model import set_trainable_top


@dataclass(frozen=True)
class CellTrainConfig:
    head_epochs: int = 2
    finetune_epochs: int = 6
    finetune_layers: int = 60
    cells_per_epoch: int = 6000
    batch_size: int = 32
    head_learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    label_smoothing: float = 0.15
    #: "cosine": the fine-tuning rate falls along a half cosine to finetune_final_fraction of
    #: itself by the last step; "constant" keeps it. At a constant 1e-4 the validation field
    #: accuracy of the first cell model swung by up to 15 points from one epoch to the next,
    #: so which epoch the schedule happened to end on decided the model.
    finetune_schedule: str = "cosine"
    finetune_final_fraction: float = 0.05
    #: Stochastic weight averaging: the weights kept are the mean of those at the end of the
    #: last ``average_last`` fine-tuning epochs (0: the last epoch's). Validation swung from
    #: epoch to epoch by several points at every schedule tried, so one epoch's weights are a
    #: draw; their average sits in the middle of the region the epochs visited. Batch-norm is
    #: frozen, so the average needs no second pass over the data for its statistics.
    average_last: int = 0
    #: Multiple-instance fine-tuning: the share of the loss taken by the field's call, the
    #: softmax of the mean log-probability of its cells (what the device's ``pool`` computes),
    #: against the field's label. 0 trains cells alone. A malignant field's odd neutrophil
    #: then need not be called a blast for the field to be right; the rest of the loss keeps
    #: each cell's own call meaningful, since the page shows it.
    field_loss_weight: float = 0.0
    fields_per_batch: int = 8
    #: Cells drawn from each field per step (with replacement when it has fewer), so every
    #: batch has one shape and the step compiles once.
    cells_per_field: int = 6
    seed: int = 1234
    #: Outputs: the 4 labels, or the differential's 11 (``converter.differential_data``).
    n_classes: int = len(LABELS)


#: Ruifrok and Johnston's H&E optical-density vectors (rows: haematoxylin, eosin, residual).
_HE = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
_HE /= np.linalg.norm(_HE, axis=1, keepdims=True)
_HE_INV = np.linalg.inv(_HE)


def stain_jitter(rgb: np.ndarray, rng: np.random.Generator, strength: float = 0.35) -> np.ndarray:
    """HED-style jitter: each stain's optical density scaled and shifted at random."""
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0)
    stains = od.reshape(-1, 3) @ _HE_INV
    alpha = rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)
    beta = rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    od = (stains * alpha + beta) @ _HE
    return np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).reshape(rgb.shape).astype(np.uint8)


def augment_cell(rgb: np.ndarray, own: np.ndarray, near: np.ndarray, rng: np.random.Generator):
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    rgb, own, near = (np.rot90(a, k) for a in (rgb, own, near))
    if flip:
        rgb, own, near = rgb[:, ::-1], own[:, ::-1], near[:, ::-1]
    rgb = stain_jitter(np.ascontiguousarray(rgb), rng)
    rgb = np.clip(rgb.astype(np.float32) * rng.uniform(0.8, 1.15, 3) + rng.normal(0, 6), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        rgb = cv2.GaussianBlur(rgb, (0, 0), float(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.3:
        rgb = np.clip(rgb + rng.normal(0, rng.uniform(1, 5), rgb.shape), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb), np.ascontiguousarray(own), np.ascontiguousarray(near)


class CellBatches(keras.utils.PyDataset):
    """Class-balanced batches of augmented cells with one-hot field labels."""

    def __init__(self, cells: CellSet, cfg: CellTrainConfig, seed: int, augment: bool = True,
                 weights: np.ndarray | None = None):
        super().__init__()
        self.cells, self.cfg, self.augment = cells, cfg, augment
        self.rng = np.random.default_rng(seed)
        if weights is None:
            labels = cells.labels
            weights = np.zeros(len(labels))
            for c in range(cfg.n_classes):
                weights[labels == c] = 1.0 / max(1, (labels == c).sum())
        self.p = weights / weights.sum()
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(self.cfg.cells_per_epoch / self.cfg.batch_size)

    def on_epoch_end(self) -> None:
        self.order = self.rng.choice(len(self.p), self.cfg.cells_per_epoch, p=self.p)

    def __getitem__(self, index: int):
        idx = self.order[index * self.cfg.batch_size:(index + 1) * self.cfg.batch_size]
        c = self.cells
        parts = [augment_cell(c.rgb[i], c.own[i], c.near[i], self.rng) if self.augment else (c.rgb[i], c.own[i], c.near[i])
                 for i in idx]
        crops = CellCrops(np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]), np.stack([p[2] for p in parts]))
        x1, x2 = model_inputs(crops)
        y = keras.utils.to_categorical(c.labels[idx], self.cfg.n_classes)
        return (x1, x2), y


def train_cells(model: keras.Model, train: CellSet, val: CellSet, cfg: CellTrainConfig,
                log: Callable[[str], None] = print, weights: np.ndarray | None = None) -> dict:
    """Train ``model`` in place; ``weights`` (one per training cell): how often each is drawn
    (None: every class equally often)."""
    keras.utils.set_random_seed(cfg.seed)
    x1v, x2v = model_inputs(CellCrops(val.rgb, val.own, val.near))
    history: dict[str, Any] = {}
    # the embedding output has no loss of its own: train the view that ends in the softmax
    classifier = keras.Model(model.inputs, model.outputs[0])
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    for phase, epochs, layers_open, lr in (("head", cfg.head_epochs, 0, cfg.head_learning_rate),
                                           ("finetune", cfg.finetune_epochs, cfg.finetune_layers, cfg.finetune_learning_rate)):
        if epochs == 0:
            continue
        set_trainable_top(model, layers_open)
        classifier.compile(optimizer=keras.optimizers.Adam(_rate(cfg, phase, lr, epochs)), loss=loss,
                           metrics=["accuracy"])
        start = time.monotonic()
        averaged: list[np.ndarray] | None = None
        run_epoch = _epoch_runner(classifier, train, cfg, phase, _rate(cfg, phase, lr, epochs), weights)
        for epoch in range(epochs):
            t = time.monotonic()
            fit = run_epoch(epoch)
            probs = classifier.predict((x1v, x2v), batch_size=64, verbose=0)
            cell_acc = float((probs.argmax(1) == val.labels).mean())
            field_acc = _field_accuracy(probs, val)
            line = (f"{phase} epoch {epoch + 1}/{epochs}: loss {fit['loss'][-1]:.4f} "
                    f"train acc {fit['accuracy'][-1]:.4f} "
                    f"val cell acc {cell_acc:.4f} val field acc {field_acc:.4f} "
                    f"({time.monotonic() - t:.0f} s, phase {time.monotonic() - start:.0f} s)")
            log(line)
            history.setdefault(phase, []).append({"val_cell_accuracy": cell_acc, "val_field_accuracy": field_acc})
            if phase == "finetune" and cfg.average_last and epoch >= epochs - cfg.average_last:
                # not ``weights``: that name is the sampling weights the next phase's batches draw with
                current: list[np.ndarray] = model.get_weights()
                averaged = current if averaged is None else [a + w for a, w in zip(averaged, current)]
        if averaged is not None:
            n = min(cfg.average_last, epochs)
            model.set_weights([a / n for a in averaged])
            probs = classifier.predict((x1v, x2v), batch_size=64, verbose=0)
            cell_acc = float((probs.argmax(1) == val.labels).mean())
            field_acc = _field_accuracy(probs, val)
            log(f"{phase}: weights averaged over the last {n} epochs: val cell acc {cell_acc:.4f} "
                f"val field acc {field_acc:.4f}")
            history[f"{phase}_averaged"] = {"epochs": n, "val_cell_accuracy": cell_acc,
                                            "val_field_accuracy": field_acc}
    return {"config": asdict(cfg), "history": history}


class FieldBags:
    """Batches of whole fields for multiple-instance fine-tuning: ``fields_per_batch`` fields
    drawn class-balanced, ``cells_per_field`` augmented cells of each."""

    def __init__(self, cells: CellSet, cfg: CellTrainConfig, seed: int):
        self.cells, self.cfg = cells, cfg
        self.rng = np.random.default_rng(seed)
        order = np.argsort(cells.field, kind="stable")
        starts = np.searchsorted(cells.field[order], np.arange(len(cells.keys) + 1))
        self.members = [order[starts[f]:starts[f + 1]] for f in range(len(cells.keys))]
        self.by_class = [np.array([f for f in range(len(cells.keys)) if cells.field_labels[f] == c and
                                   len(self.members[f])]) for c in range(cfg.n_classes)]

    def batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg, c = self.cfg, self.cells
        picked: list[int] = []
        labels: list[int] = []
        for k in self.rng.integers(cfg.n_classes, size=cfg.fields_per_batch):
            f = int(self.rng.choice(self.by_class[k]))
            members = self.members[f]
            picked.extend(self.rng.choice(members, cfg.cells_per_field, replace=len(members) < cfg.cells_per_field))
            labels.append(k)
        parts = [augment_cell(c.rgb[i], c.own[i], c.near[i], self.rng) for i in picked]
        x1, x2 = model_inputs(CellCrops(*(np.stack([p[j] for p in parts]) for j in range(3))))
        return x1, x2, keras.utils.to_categorical(np.array(labels), cfg.n_classes)


def _bag_step(classifier: keras.Model, cfg: CellTrainConfig, rate):
    """One compiled optimisation step on a batch of fields: the cells' own loss (label
    smoothed, each cell with its field's label) and the fields' pooled loss, weighted."""
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(rate)
    cell_loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    field_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing)
    variables = classifier.trainable_variables
    w, k, n = cfg.field_loss_weight, cfg.cells_per_field, cfg.n_classes

    @tf.function(reduce_retracing=True)
    def step(x1, x2, y_field):
        with tf.GradientTape() as tape:
            p = classifier([x1, x2], training=True)
            per_cell = cell_loss(tf.repeat(y_field, k, axis=0), p)
            pooled = tf.reduce_mean(tf.reshape(tf.math.log(p + 1e-6), (-1, k, n)), axis=1)
            loss = (1.0 - w) * per_cell + w * field_loss(y_field, pooled)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        correct = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(pooled, 1), tf.argmax(y_field, 1)), tf.float32))
        return loss, correct

    return step


def _epoch_runner(classifier: keras.Model, train: CellSet, cfg: CellTrainConfig, phase: str,
                  rate, weights: np.ndarray | None = None) -> Callable[[int], dict[str, list[float]]]:
    """What one epoch of a phase runs, returning ``fit``'s history (loss, accuracy): field
    bags for a multiple-instance fine-tuning phase, else Keras' ``fit`` on single cells
    (compiled by the caller)."""
    if phase == "finetune" and cfg.field_loss_weight > 0:
        bags, step = FieldBags(train, cfg, cfg.seed + 11), _bag_step(classifier, cfg, rate)
        return lambda epoch: _fit_bags(step, bags, cfg)
    return lambda epoch: classifier.fit(CellBatches(train, cfg, cfg.seed + 100 * epoch + (phase == "finetune") * 7,
                                                    weights=weights),
                                        epochs=1, verbose=0).history


def _fit_bags(step, bags: FieldBags, cfg: CellTrainConfig) -> dict[str, list[float]]:
    """One epoch of field batches: as many cells as an epoch of ``CellBatches``; the mean
    loss and the training fields' accuracy, in ``fit``'s history shape."""
    steps = math.ceil(cfg.cells_per_epoch / (cfg.fields_per_batch * cfg.cells_per_field))
    losses, accuracies = [], []
    for _ in range(steps):
        x1, x2, y = bags.batch()
        loss, correct = step(x1, x2, y)
        losses.append(float(loss))
        accuracies.append(float(correct))
    return {"loss": [float(np.mean(losses))], "accuracy": [float(np.mean(accuracies))]}


def _rate(cfg: CellTrainConfig, phase: str, lr: float, epochs: int):
    """The learning rate of a phase: constant for the head, the configured schedule for
    fine-tuning (the optimizer is compiled once per phase, so its step count runs on across
    the epochs' fit calls)."""
    if phase != "finetune" or cfg.finetune_schedule == "constant":
        return lr
    if cfg.finetune_schedule != "cosine":
        raise ValueError(f"finetune_schedule {cfg.finetune_schedule!r}: use 'cosine' or 'constant'")
    steps = epochs * math.ceil(cfg.cells_per_epoch / cfg.batch_size)
    return keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=cfg.finetune_final_fraction)


def _field_accuracy(probs: np.ndarray, cells: CellSet) -> float:
    """Field label = argmax of the mean log-probability of its cells (fields without cells
    count as wrong): a log only, not a choice of weights."""
    correct = 0
    for f in range(len(cells.keys)):
        sel = cells.field == f
        if sel.any() and np.log(probs[sel] + 1e-6).mean(0).argmax() == cells.field_labels[f]:
            correct += 1
    return correct / max(1, len(cells.keys))
