"""Which TFLite interpreter this machine has.

Coral's Raspberry Pi images ship ``tflite-runtime`` (2.14, built against numpy 1: it
crashes under numpy 2), elsewhere ``ai-edge-litert`` is the maintained runtime. Both
expose the same ``Interpreter`` class, so the rest of the edge code does not care.
"""

from __future__ import annotations

import numpy as np


class RuntimeUnavailable(RuntimeError):
    pass


def interpreter_class() -> tuple[type, str]:
    """The TFLite ``Interpreter`` class to use and the runtime's name."""
    if int(np.__version__.split(".")[0]) < 2:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

            return Interpreter, "tflite-runtime"
        except ImportError:
            pass
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    raise RuntimeUnavailable(
        "no TFLite runtime: install ai-edge-litert (pip install 'blastscope[litert]') "
        "or tflite-runtime with numpy<2"
    )

