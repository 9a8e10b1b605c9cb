"""The dual-input MobileNetV2: original field + segmented field, fused before the head.

Edge TPU friendly by construction: every layer is Conv2D/DepthwiseConv2D/ReLU6/Add/
Mean/Concatenation/FullyConnected/Softmax, all on the Edge TPU's supported list, and
the inputs take raw 0..255 pixels so the quantized input needs no host-side scaling.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from edge.analysis.labels import LABELS

INPUT_SIDE = 224
INPUT_NAMES = ("original", "segmented")


def _backbone(name: str, weights: str | Path | None) -> keras.Model:
    return keras.applications.MobileNetV2(
        input_shape=(INPUT_SIDE, INPUT_SIDE, 3),
        include_top=False,
        weights=str(weights) if weights is not None else None,
        name=f"{name}_mobilenetv2",
    )


def build_model(weights: str | Path | None = "imagenet", batch_size: int | None = None, dropout: float = 0.3) -> keras.Model:
    """Two MobileNetV2 branches (one per input), global-average pooled, concatenated,
    then dropout and a softmax over the four classes.

    ``weights`` is Keras' ``"imagenet"`` (needs internet), a path to a ``.weights.h5``
    file, or None. ``batch_size=1`` builds the fixed-batch graph that is exported.
    """
    inputs, features = [], []
    for name in INPUT_NAMES:
        x_in = keras.Input(shape=(INPUT_SIDE, INPUT_SIDE, 3), batch_size=batch_size, name=name)
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=f"{name}_scale")(x_in)
        # training=False keeps batch-norm in inference mode even while fine-tuning: the
        # shipped ImageNet weights have BN folded in and would be destroyed otherwise.
        x = _backbone(name, weights)(x, training=False)
        features.append(layers.GlobalAveragePooling2D(name=f"{name}_pool")(x))
        inputs.append(x_in)
    x = layers.Concatenate(name="fuse")(features)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name="blastscope_dual_mobilenetv2")


def backbones(model: keras.Model) -> list[keras.Model]:
    return [model.get_layer(f"{name}_mobilenetv2") for name in INPUT_NAMES]


def set_trainable_top(model: keras.Model, n_layers: int) -> None:
    """Freeze each backbone except its last ``n_layers`` layers (0 freezes it whole).
    Batch-norm layers stay frozen always (see ``build_model``)."""
    for base in backbones(model):
        base.trainable = n_layers > 0
        for i, layer in enumerate(base.layers):
            trainable = n_layers > 0 and i >= len(base.layers) - n_layers
            layer.trainable = trainable and not isinstance(layer, layers.BatchNormalization)
