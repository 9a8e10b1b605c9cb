"""Which TFLite interpreter this machine has.

``ai-edge-litert`` is the maintained runtime and what the device installs (the ``[device]``
extra), so it is taken whenever it imports. ``tflite-runtime`` 2.14 (the ``[tflite]`` extra) is
only a fallback, and only beside numpy 1 (it is built against numpy 1 and crashes under numpy
2): on identical cell crops it computes the cell model differently enough to name another
class for some cells, and ``model install`` refuses the bundle there (docs/converter.md). Both
modules expose the same ``Interpreter`` and ``load_delegate``, so the rest of the edge code
does not care which one it got.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np


class RuntimeUnavailable(RuntimeError):
    pass


def interpreter_module() -> tuple[ModuleType, str]:
    """The TFLite interpreter module to use and the runtime's name."""
    try:
        from ai_edge_litert import interpreter  # type: ignore[import-not-found]

        return interpreter, "ai-edge-litert"
    except ImportError:
        pass
    if int(np.__version__.split(".")[0]) < 2:
        try:
            from tflite_runtime import interpreter  # type: ignore[import-not-found]

            return interpreter, "tflite-runtime"
        except ImportError:
            pass
    raise RuntimeUnavailable(
        "no TFLite runtime: install ai-edge-litert (pip install 'blastscope[litert]') "
        "or tflite-runtime with numpy<2"
    )
