"""The per-cell dual-input MobileNetV2: the cell with its rim, and the cell's mask applied.

The design of the seeds (an original and a segmented input, fused before the head) kept,
at the scale of one cell: both inputs are standardised grey crops (``edge.analysis.cells``),
so the stain's colour cannot reach the model. A 64-wide embedding layer before the softmax
is a second output; the device measures how far a cell's embedding lies from the training
cells (``edge.model.ood``) to refuse cells unlike anything it was trained on. Every layer is
on the Edge TPU's supported list; inputs take raw 0..255 pixels.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from edge.analysis.labels import LABELS

CELL_SIDE = 96
INPUT_NAMES = ("cell", "cell_masked")
EMBEDDING = 64


def build_cell_model(weights: str | Path | None = "imagenet", batch_size: int | None = None,
                     dropout: float = 0.3, side: int = CELL_SIDE, n_classes: int = len(LABELS)) -> keras.Model:
    """``weights``: Keras' ``"imagenet"`` (needs internet), a ``.weights.h5`` path, or None.
    ``n_classes``: the 4 labels, or the differential's (``converter.differential_data``)."""
    inputs, features = [], []
    for name in INPUT_NAMES:
        x_in = keras.Input(shape=(side, side, 3), batch_size=batch_size, name=name)
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{name}_scale")(x_in)
        base = keras.applications.MobileNetV2(input_shape=(side, side, 3), include_top=False,
                                              weights=str(weights) if weights is not None else None,
                                              name=f"{name}_mobilenetv2")
        # BN stays in inference mode: the shipped ImageNet weights have it folded in
        x = base(x, training=False)
        features.append(layers.GlobalAveragePooling2D(name=f"{name}_pool")(x))
        inputs.append(x_in)
    x = layers.Concatenate(name="fuse")(features)
    x = layers.Dropout(dropout, name="dropout")(x)
    embedding = layers.Dense(EMBEDDING, activation="relu", name="embedding")(x)
    probabilities = layers.Dense(n_classes, activation="softmax", name="probabilities")(embedding)
    return keras.Model(inputs=inputs, outputs=[probabilities, embedding], name="blastscope_cell_mobilenetv2")


def set_trainable_top(model: keras.Model, n_layers: int) -> None:
    """Freeze each backbone but its last ``n_layers`` layers; batch-norm stays frozen."""
    for name in INPUT_NAMES:
        base = model.get_layer(f"{name}_mobilenetv2")
        base.trainable = n_layers > 0
        for i, layer in enumerate(base.layers):
            layer.trainable = (n_layers > 0 and i >= len(base.layers) - n_layers
                               and not isinstance(layer, layers.BatchNormalization))
