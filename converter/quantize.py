"""Full-integer post-training quantization to a fixed-batch TFLite model.

Inputs and output are uint8 (what the Edge TPU and a camera frame both speak); every
operation inside is int8. The representative set is drawn from training fields and
includes their device-identical segmentations, so activation ranges are calibrated on
what the device will feed.
"""

from __future__ import annotations

import tempfile
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

from converter.model import INPUT_NAMES, build_model


def export_model(trained: keras.Model) -> keras.Model:
    """The same network with a fixed batch of 1 (the Edge TPU needs static shapes)."""
    fixed = build_model(weights=None, batch_size=1)
    fixed.set_weights(trained.get_weights())
    return fixed


def quantize(trained: keras.Model, representative: dict[str, np.ndarray]) -> bytes:
    """Convert the field model to a full-int8 TFLite flatbuffer (see ``convert``)."""
    fixed = export_model(trained)
    return convert(fixed, INPUT_NAMES, lambda original, segmented: {"probabilities": fixed({"original": original, "segmented": segmented},
                                                                             training=False)}, representative)


def quantize_cells(trained: keras.Model, representative: dict[str, np.ndarray]) -> bytes:
    """The cell model (two inputs, probabilities and embedding) to full int8."""
    from converter.cell_model import INPUT_NAMES as CELL_INPUTS, build_cell_model

    fixed = build_cell_model(weights=None, batch_size=1, side=int(trained.input_shape[0][1]),
                             n_classes=int(trained.outputs[0].shape[-1]))  # 4, or the differential's 11
    fixed.set_weights(trained.get_weights())

    def endpoint(cell, cell_masked):
        probabilities, embedding = fixed({"cell": cell, "cell_masked": cell_masked}, training=False)
        return {"probabilities": probabilities, "embedding": embedding}

    return convert(fixed, CELL_INPUTS, endpoint, representative)


def convert(fixed: keras.Model, names: tuple[str, ...], endpoint, representative: dict[str, np.ndarray]) -> bytes:
    """Convert a fixed-batch model to a full-int8 TFLite flatbuffer.

    ``representative`` holds float32 batches under the input names; each sample is fed
    one at a time through the model's serving signature, keyed by name so the order of
    the converter's inputs cannot mix them up.
    """
    specs = [tf.TensorSpec((1, *fixed.input_shape[0][1:]), tf.float32, name=n) for n in names]
    n = len(representative[names[0]])

    def samples() -> Iterator[dict[str, np.ndarray]]:
        for i in range(n):
            yield {name: representative[name][i : i + 1] for name in names}

    with tempfile.TemporaryDirectory() as tmp:
        # A SavedModel signature freezes Keras 3 variables cleanly (a bare concrete
        # function leaves READ_VARIABLE ops behind) and names the inputs.
        archive = keras.export.ExportArchive()
        archive.track(fixed)
        archive.add_endpoint("serving_default", endpoint, input_signature=specs)
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        return converter.convert()
