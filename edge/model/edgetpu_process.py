"""The Edge TPU in a child process, as Frigate runs its detectors.

A fault inside Coral's native stack (libedgetpu, the delegate, the USB driver) is a signal,
not a Python exception: with a ``libedgetpu.so.1`` that segfaults the daemon exited 139
before serving and systemd restarted it in a loop, never falling back to the CPU. Here the
Edge TPU is opened and run by a child process; the daemon sends it each input pair and waits
with a deadline. A crash, a hang or an error there is an ``InferenceError`` here, which
``BackendManager`` answers as it answers any Edge TPU failure: the field runs on the CPU, the
status says degraded and why, and the Edge TPU is tried again later in a new child.

The cost is a copy of each input pair and its outputs through a pipe, small beside an
invoke; ``blastscope-edge bench`` measures the in-process backend.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from edge.model.inference import EdgeTpuBackend, Inference, InferenceError


def _serve(conn: Connection, model_path: str) -> None:
    """The child: open the Edge TPU, say so, then answer input pairs until told to stop."""
    try:
        backend = EdgeTpuBackend(Path(model_path))
    except Exception as exc:  # noqa: BLE001 - every reason the accelerator cannot open goes back to the parent
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", backend.runtime, backend.input_side, backend.kind))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        try:
            out = backend.infer(*message)
            conn.send(("ok", out.probabilities, out.embedding))
        except Exception as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class EdgeTpuProcess:
    """A ``Backend`` whose Edge TPU lives in a child process (``spawn``: no thread or lock of
    the daemon is copied into it). Raises ``InferenceError`` saying why when it cannot start."""

    name = "edgetpu"

    def __init__(self, model_path: Path, start_timeout_s: float = 60.0, invoke_timeout_s: float = 10.0) -> None:
        self.invoke_timeout_s = invoke_timeout_s
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, str(model_path)), name="blastscope-edgetpu",
                                        daemon=True)
        self._process.start()
        child.close()
        reply = self._receive(start_timeout_s, "opening the Edge TPU")
        if reply[0] != "ready":
            self.close()
            raise InferenceError(f"no Edge TPU available ({reply[1]})")
        _, runtime, self.input_side, self.kind = reply
        self.runtime = f"{runtime} (in a child process)"

    def _receive(self, timeout_s: float, doing: str) -> tuple[Any, ...]:
        if not self._conn.poll(timeout_s):
            self.close()
            raise InferenceError(f"the Edge TPU process gave no answer within {timeout_s:g} s while {doing}")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._process.join(timeout=2)
            code = self._process.exitcode
            self.close()
            raise InferenceError(f"the Edge TPU process died while {doing} ({_exit_text(code)})") from None

    def infer(self, first: np.ndarray, second: np.ndarray) -> Inference:
        try:
            self._conn.send((first, second))
        except (BrokenPipeError, OSError):
            self._process.join(timeout=2)
            code = self._process.exitcode
            self.close()
            raise InferenceError(f"the Edge TPU process is gone ({_exit_text(code)})") from None
        reply = self._receive(self.invoke_timeout_s, "running the model")
        if reply[0] != "ok":
            raise InferenceError(f"Edge TPU: {reply[1]}")
        return Inference(reply[1], reply[2])

    def probabilities(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return self.infer(first, second).probabilities

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def close(self) -> None:
        """Stop the child (politely, then for good); safe to call twice."""
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError, ValueError):
            pass
        self._process.join(timeout=2)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=2)
        self._conn.close()
