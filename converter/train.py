"""Two-phase fine-tuning of the dual MobileNetV2 on the grouped training split.

Phase 1 trains the head with both backbones frozen; phase 2 unfreezes the top of each
backbone at a lower learning rate. The schedule is fixed in advance (no early stopping):
the validation split then stays unused by training, and calibration, the case rule and the
gate limits are fitted on it without having also chosen the weights. Validation figures
are logged per epoch to read the run, never to select it. The epoch counts come from the
previous release, whose validation accuracy stopped improving after 4 head and about 8
fine-tuning epochs; the stronger augmentation gets more fine-tuning epochs. Seeds are
fixed; per-epoch progress lines carry an ETA.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import keras
import numpy as np

from edge.analysis.labels import LABELS
from edge.analysis.segmentation import SegmentationParams

from converter.augment import augment
from converter.inputs import model_inputs
from converter.model import set_trainable_top


@dataclass(frozen=True)
class TrainConfig:
    head_epochs: int = 4
    finetune_epochs: int = 14
    finetune_layers: int = 80  # last layers of each backbone unfrozen in phase 2
    batch_size: int = 32
    head_learning_rate: float = 1e-3
    finetune_learning_rate: float = 5e-5
    # Smoothing keeps a few confidently wrong fields from dominating the validation loss
    # and keeps the softmax off its 0/1 rails, where a uint8 output has no resolution.
    label_smoothing: float = 0.1
    seed: int = 1234


class AugmentedFields(keras.utils.PyDataset):
    """Batches of (augmented original, its segmentation) with one-hot labels."""

    def __init__(self, fields: np.ndarray, labels: np.ndarray, params: SegmentationParams, batch_size: int, seed: int):
        super().__init__()
        self.fields, self.labels, self.params = fields, labels, params
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(fields))

    def __len__(self) -> int:
        return math.ceil(len(self.fields) / self.batch_size)

    def __getitem__(self, index: int):
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = np.stack([augment(self.fields[i], self.rng) for i in idx])
        return model_inputs(batch, self.params), keras.utils.to_categorical(self.labels[idx], len(LABELS))

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.fields))


class ProgressLog(keras.callbacks.Callback):
    """One line per epoch with metrics, elapsed time and the phase's ETA (log-file friendly)."""

    def __init__(self, phase: str, epochs: int, log: Callable[[str], None]):
        super().__init__()
        self.phase, self.epochs, self.log = phase, epochs, log

    def on_train_begin(self, logs=None) -> None:
        self.start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        elapsed = time.monotonic() - self.start
        eta = elapsed / (epoch + 1) * (self.epochs - epoch - 1)
        metrics = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        self.log(f"[{self.phase}] epoch {epoch + 1}/{self.epochs} {metrics} elapsed={elapsed:.0f}s eta<={eta:.0f}s")


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights: Benign is the smallest class and the one that matters
    most for specificity."""
    counts = np.bincount(labels, minlength=len(LABELS)).astype(np.float64)
    return {i: float(len(labels) / (len(LABELS) * c)) if c else 0.0 for i, c in enumerate(counts)}


def train(
    model: keras.Model,
    train_fields: np.ndarray,
    train_labels: np.ndarray,
    val_fields: np.ndarray,
    val_labels: np.ndarray,
    params: SegmentationParams,
    config: TrainConfig,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Fine-tune ``model`` in place; returns a history record for the manifest."""
    keras.utils.set_random_seed(config.seed)
    data = AugmentedFields(train_fields, train_labels, params, config.batch_size, config.seed)
    val_x = model_inputs(val_fields, params)
    val_y = keras.utils.to_categorical(val_labels, len(LABELS))
    weights = class_weights(train_labels)
    history: dict[str, Any] = {"config": asdict(config), "class_weights": weights, "phases": []}
    phases = [("head", 0, config.head_epochs, config.head_learning_rate),
              ("finetune", config.finetune_layers, config.finetune_epochs, config.finetune_learning_rate)]
    for phase, n_layers, epochs, lr in phases:
        if epochs <= 0:
            continue
        set_trainable_top(model, n_layers)
        model.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"],
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing))
        log(f"[{phase}] {epochs} epochs, lr={lr}, unfrozen layers per backbone={n_layers}, "
            f"{len(train_fields)} train / {len(val_fields)} val fields")
        fit = model.fit(data, validation_data=(val_x, val_y), epochs=epochs, class_weight=weights,
                        callbacks=[ProgressLog(phase, epochs, log)], verbose=0)
        history["phases"].append({"phase": phase, "epochs_run": len(fit.history["loss"]),
                                  **{k: [round(float(v), 5) for v in vals] for k, vals in fit.history.items()}})
    return history
