"""The Edge TPU in a child process, as Frigate runs its detectors.

A fault inside Coral's native stack (libedgetpu, the delegate, the USB driver) is a signal,
not a Python exception: with a ``libedgetpu.so.1`` that segfaults the daemon exited 139
before serving and systemd restarted it in a loop, never falling back to the CPU. Here the
Edge TPU is opened and run by a child process; the daemon sends it each input pair and waits
with a deadline. A crash, a hang or an error there is an ``InferenceError`` here, which
``BackendManager`` answers as it answers any Edge TPU failure: the field runs on the CPU, the
status says degraded and why, and the Edge TPU is tried again later in a new child.

The input pairs go through shared memory, a batch of up to ``MAX_BATCH`` pairs at once, and
the pipe carries only "read n pairs" and the outputs (issue 36: two 27.6 kB arrays pickled per
invocation cost the parent as much CPU as an Edge TPU invocation). ``blastscope-edge bench``
measures the in-process backend.
"""

from __future__ import annotations

import math
import multiprocessing
import signal
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from edge.model.inference import EdgeTpuBackend, Inference, InferenceError

#: The most input pairs handed over at once (a field's cells and views come in batches of this
#: many: ``edge.model.views.MAX_BATCH``).
MAX_BATCH = 8


def _pairs(shm: SharedMemory, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The shared block as (MAX_BATCH, 2, *shape) arrays: pair i is [i, 0] and [i, 1]."""
    return np.ndarray((MAX_BATCH, 2, *shape), np.dtype(dtype), buffer=shm.buf)


def _serve(conn: Connection, model_path: str) -> None:
    """The child: open the Edge TPU, say so, then answer input pairs until told to stop."""
    try:
        backend = EdgeTpuBackend(Path(model_path))
    except Exception as exc:  # noqa: BLE001 - every reason the accelerator cannot open goes back to the parent
        conn.send(("error", str(exc)))
        return
    conn.send(("ready", backend.runtime, backend.input_side, backend.kind))
    shm: SharedMemory | None = None
    pairs: np.ndarray | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        try:
            if message[0] == "shm":  # the parent's block of input pairs: it owns it and unlinks it
                if shm is not None:
                    shm.close()
                shm = SharedMemory(name=message[1])
                # the parent unlinks it; this process's tracker must not (bpo-39959)
                resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
                pairs = _pairs(shm, message[2], message[3])
                conn.send(("ok",))
            elif message[0] == "read" and pairs is not None:
                outs = [backend.infer(pairs[i, 0], pairs[i, 1]) for i in range(message[1])]
                conn.send(("ok", [(o.probabilities, o.embedding) for o in outs]))
            else:
                conn.send(("error", f"unknown request {message[0]!r}"))
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
        self._shm: SharedMemory | None = None
        self._pairs: np.ndarray | None = None

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

    def _send(self, message: Any) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError):
            self._process.join(timeout=2)
            code = self._process.exitcode
            self.close()
            raise InferenceError(f"the Edge TPU process is gone ({_exit_text(code)})") from None

    def _block_for(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The shared block for pairs of this shape, made (and handed to the child) when first
        needed or when the shape changes."""
        if self._pairs is None or self._pairs.shape[2:] != shape or self._pairs.dtype != dtype:
            self._release()
            size = MAX_BATCH * 2 * math.prod(shape) * dtype.itemsize
            self._shm = SharedMemory(create=True, size=size)
            self._pairs = _pairs(self._shm, shape, dtype.str)
            self._send(("shm", self._shm.name, shape, dtype.str))
            reply = self._receive(self.invoke_timeout_s, "opening the shared inputs")
            if reply[0] != "ok":
                raise InferenceError(f"Edge TPU: {reply[1]}")
        return self._pairs

    def infer_batch(self, firsts: np.ndarray, seconds: np.ndarray) -> list[Inference]:
        """Up to ``MAX_BATCH`` pairs per round trip through shared memory; the compiled model
        reads one pair an invocation (batch 1), so this saves the copies, not the invocations."""
        out: list[Inference] = []
        for start in range(0, len(firsts), MAX_BATCH):
            a, b = firsts[start:start + MAX_BATCH], seconds[start:start + MAX_BATCH]
            block = self._block_for(tuple(a.shape[1:]), a.dtype)
            block[:len(a), 0] = a
            block[:len(a), 1] = b
            self._send(("read", len(a)))
            reply = self._receive(self.invoke_timeout_s * len(a), "running the model")
            if reply[0] != "ok":
                raise InferenceError(f"Edge TPU: {reply[1]}")
            out.extend(Inference(p, e) for p, e in reply[1])
        return out

    def infer(self, first: np.ndarray, second: np.ndarray) -> Inference:
        return self.infer_batch(first[None], second[None])[0]

    def probabilities(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return self.infer(first, second).probabilities

    @property
    def shared_block(self) -> str | None:
        """The shared memory block's name (under /dev/shm), while there is one."""
        return None if self._shm is None else self._shm.name

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _release(self) -> None:
        self._pairs = None
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def close(self) -> None:
        """Stop the child (politely, then for good) and free the shared block; safe to call twice."""
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError, ValueError):
            pass
        self._process.join(timeout=2)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=2)
        self._conn.close()
        if getattr(self, "_shm", None) is not None:
            self._release()
