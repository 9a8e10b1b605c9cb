"""Running the bundle's int8 model: input quantization, invoke, output dequantization.

One class per accelerator behind the ``Backend`` protocol; this module holds the CPU
backend (the daemon adds the Edge TPU). Inputs are matched to the model by name, never
by position: the TFLite converter does not keep the Keras input order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.runtime import interpreter_class

INPUT_NAMES = ("original", "segmented")


class Backend(Protocol):
    name: str
    input_side: int

    def probabilities(self, original: np.ndarray, segmented: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) class probabilities for one 224x224 RGB uint8 field pair."""
        ...


class InferenceError(RuntimeError):
    pass


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    dtype = detail["dtype"]
    if scale == 1.0 and zero == 0 and dtype == np.uint8:
        return x  # raw pixels, the normal case for BlastScope bundles
    info = np.iinfo(dtype)
    return np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max).astype(dtype)


class TFLiteModel:
    """A loaded TFLite interpreter with BlastScope's two named inputs."""

    def __init__(self, interpreter) -> None:
        self.interpreter = interpreter
        interpreter.allocate_tensors()
        self.inputs: dict[str, dict] = {}
        for detail in interpreter.get_input_details():
            matches = [n for n in INPUT_NAMES if n in detail["name"]]
            if len(matches) != 1:
                raise InferenceError(f"model input {detail['name']!r} is neither 'original' nor 'segmented'")
            self.inputs[matches[0]] = detail
        if set(self.inputs) != set(INPUT_NAMES):
            raise InferenceError(f"model inputs {sorted(self.inputs)} differ from {list(INPUT_NAMES)}")
        outputs = interpreter.get_output_details()
        if len(outputs) != 1:
            raise InferenceError(f"model has {len(outputs)} outputs, expected 1")
        self.output = outputs[0]
        self.input_side = int(self.inputs["original"]["shape"][1])

    def probabilities(self, original: np.ndarray, segmented: np.ndarray) -> np.ndarray:
        for name, image in (("original", original), ("segmented", segmented)):
            detail = self.inputs[name]
            self.interpreter.set_tensor(detail["index"], _quantize(image[None], detail))
        self.interpreter.invoke()
        raw = self.interpreter.get_tensor(self.output["index"])[0]
        scale, zero = self.output["quantization"]
        if scale:
            return (raw.astype(np.float32) - zero) * scale
        return raw.astype(np.float32)


class CpuBackend(TFLiteModel):
    """The int8 model on the CPU through tflite-runtime or ai-edge-litert."""

    def __init__(self, model_path: Path, num_threads: int = 2) -> None:
        interpreter_cls, self.runtime = interpreter_class()
        super().__init__(interpreter_cls(model_path=str(model_path), num_threads=num_threads))
        self.name = "cpu"


def timed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
