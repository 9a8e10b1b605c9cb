"""Running the bundle's int8 model on an accelerator: one backend class per device.

``CpuBackend`` and ``EdgeTpuBackend`` share the same input quantization, invoke and
output dequantization (``TFLiteModel``). ``BackendManager`` chooses between them, falls
back to the CPU when the Edge TPU fails mid-run, re-probes it periodically, and keeps
per-backend speed figures for ``/api/status``. Inputs are matched to the model by name,
never by position: the TFLite converter does not keep the Keras input order.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Protocol

import numpy as np
from pydantic import Field, field_validator

from edge.model.runtime import interpreter_module
from edge.model.signing import parse_public_key
from edge.analysis.labels import DIFFERENTIAL, LABELS
from edge.settings import Float, Int, Settings


class InferenceConfig(Settings):
    backend: Literal["auto", "edgetpu", "cpu"] = "auto"
    bundle: str = ""  # empty: the installed model (state dir's models/current), else the shipped one
    threads: Annotated[Int, Field(ge=1)] = 2
    reprobe_seconds: Annotated[Float, Field(gt=0)] = 60.0
    # How a cell's orientations are read (edge.model.views): "adaptive" reads every cell upright
    # and the other views only where they could change a call; "all" reads every view always.
    views: Literal["adaptive", "all"] = "adaptive"
    # Public keys trusted beside the release's ("ed25519:<base64>"): a development device's own
    # key. The release's keys and its revocation list ship with the software (edge.model.signing).
    trusted_keys: tuple[str, ...] = ()
    allow_unsigned: bool = False  # a development bundle; never on a device screening patients

    @field_validator("trusted_keys")
    @classmethod
    def _keys_parse(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for text in keys:
            parse_public_key(text)  # SignatureError is a ValueError: reported against the key
        return keys


#: The two inputs of each model kind, in the order the backends take them: a field model
#: reads (field, segmented field), a cell model (cell with its rim, cell mask applied).
INPUT_PAIRS = {"field": ("original", "segmented"), "cells": ("cell", "cell_masked")}
INPUT_NAMES = INPUT_PAIRS["field"]


@dataclass(frozen=True)
class Inference:
    """What one invoke gives: the class probabilities and, for a cell model, the embedding
    the out-of-distribution check measures (``edge.model.ood``)."""

    probabilities: np.ndarray
    embedding: np.ndarray | None = None


class Backend(Protocol):
    name: str
    input_side: int

    def infer(self, first: np.ndarray, second: np.ndarray) -> Inference:
        """Raw (uncalibrated) outputs for one input pair (RGB uint8, the model's side)."""
        ...

    def probabilities(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The class probabilities alone (``infer(...).probabilities``)."""
        ...


class InferenceError(RuntimeError):
    pass


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    dtype = detail["dtype"]
    if scale == 1.0 and zero == 0 and dtype == np.uint8:
        return x  # raw pixels, the normal case for BlastScope bundles
    info = np.iinfo(dtype)
    return np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero = detail["quantization"]
    return (raw.astype(np.float32) - zero) * scale if scale else raw.astype(np.float32)


def _input_role(tensor_name: str, names: tuple[str, ...]) -> str | None:
    """Which of ``names`` a converter-made tensor name ("serving_default_cell_masked:0")
    stands for; the longest match wins, so "cell" never claims "cell_masked"."""
    base = tensor_name.split(":")[0]
    found = [n for n in names if base == n or base.endswith("_" + n)]
    return max(found, key=len) if found else None


class TFLiteModel:
    """A loaded TFLite interpreter with BlastScope's two named inputs (a field model's or a
    cell model's) and one output (probabilities) or two (probabilities and embedding)."""

    def __init__(self, interpreter: Any) -> None:  # a LiteRT, tflite-runtime or pycoral Interpreter
        self.interpreter = interpreter
        self._tensors: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        interpreter.allocate_tensors()
        details = interpreter.get_input_details()
        for kind, names in INPUT_PAIRS.items():
            roles = {_input_role(d["name"], names): d for d in details}
            if set(roles) == set(names):
                self.kind, self.input_names, self.inputs = kind, names, roles
                break
        else:
            raise InferenceError(f"model inputs {[d['name'] for d in details]} are neither "
                                 + " nor ".join(f"{a!r} and {b!r}" for a, b in INPUT_PAIRS.values()))
        outputs = interpreter.get_output_details()
        # class probabilities: the four labels, or a cell model's differential (up to 11); the
        # embedding is wider (64)
        classes = {len(LABELS), len(DIFFERENTIAL)}
        probabilities = [o for o in outputs if int(o["shape"][-1]) in classes]
        others = [o for o in outputs if int(o["shape"][-1]) not in classes]
        if len(probabilities) != 1 or len(others) > 1:
            raise InferenceError(f"model has outputs of shapes {[list(o['shape']) for o in outputs]}; expected one of "
                                 f"{len(LABELS)} or {len(DIFFERENTIAL)} class probabilities, and at most one embedding")
        self.output, self.embedding_output = probabilities[0], (others[0] if others else None)
        self.input_side = int(self.inputs[self.input_names[0]]["shape"][1])

    def infer(self, first: np.ndarray, second: np.ndarray) -> Inference:
        return self._run(self.interpreter, first[None], second[None])[0]

    def _run(self, interpreter: Any, firsts: np.ndarray, seconds: np.ndarray) -> list[Inference]:
        """``firsts``/``seconds`` (a batch) through ``interpreter``: this model's, or one made
        for a larger batch (``CpuBackend.infer_batch``), whose tensors are found by name."""
        # looked up once per interpreter, not per invocation (this runs for every view of every cell)
        if (known := self._tensors.get(id(interpreter))) is None:
            known = ({d["name"]: d for d in interpreter.get_input_details()},
                     {d["name"]: d for d in interpreter.get_output_details()})
            self._tensors[id(interpreter)] = known
        inputs, outputs = known
        for name, images in zip(self.input_names, (firsts, seconds)):
            detail = inputs[self.inputs[name]["name"]]
            interpreter.set_tensor(detail["index"], _quantize(np.asarray(images), detail))
        interpreter.invoke()
        out = outputs[self.output["name"]]
        probabilities = _dequantize(interpreter.get_tensor(out["index"]), out)
        embeddings = None
        if self.embedding_output is not None:
            emb = outputs[self.embedding_output["name"]]
            embeddings = _dequantize(interpreter.get_tensor(emb["index"]), emb)
        return [Inference(probabilities[i], None if embeddings is None else embeddings[i]) for i in range(len(firsts))]

    def probabilities(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        return self.infer(first, second).probabilities


class CpuBackend(TFLiteModel):
    """The int8 model on the CPU through tflite-runtime or ai-edge-litert."""

    name = "cpu"

    def __init__(self, model_path: Path, num_threads: int = 2) -> None:
        module, self.runtime = interpreter_module()
        self._module, self._model_path, self._threads = module, model_path, num_threads
        self._batched: dict[int, Any] = {}  # an interpreter per batch size, made when first needed
        super().__init__(module.Interpreter(model_path=str(model_path), num_threads=num_threads))

    def infer_batch(self, firsts: np.ndarray, seconds: np.ndarray) -> list[Inference]:
        """``len(firsts)`` pairs in one invocation (issue 36: a cell's eight views were eight
        invocations). The int8 kernels compute each sample alone, so the outputs are those of
        ``infer`` on each pair (``tests/model/test_views.py``)."""
        n = len(firsts)
        interpreter = self._batched.get(n)
        if interpreter is None:
            interpreter = self._module.Interpreter(model_path=str(self._model_path), num_threads=self._threads)
            for detail in interpreter.get_input_details():
                interpreter.resize_tensor_input(detail["index"], [n, *detail["shape"][1:]])
            interpreter.allocate_tensors()
            self._batched[n] = interpreter
        return self._run(interpreter, firsts, seconds)


EDGETPU_LIBRARY = "libedgetpu.so.1"


class EdgeTpuBackend(TFLiteModel):
    """The compiled model on a Coral Edge TPU: the runtime's interpreter with the
    ``libedgetpu.so.1`` delegate (libedgetpu1-std), or pycoral's ``make_interpreter`` where
    pycoral imports (it is not packaged for Bookworm's Python 3.11).
    Raises ``InferenceError`` saying why when no Edge TPU can be used."""

    name = "edgetpu"

    def __init__(self, model_path: Path) -> None:
        try:
            from pycoral.utils.edgetpu import make_interpreter  # type: ignore[import-not-found]
        except Exception:  # noqa: BLE001 - absent on Bookworm (no python3-pycoral for 3.11) or broken
            make_interpreter = None
        if make_interpreter is not None:
            try:
                interpreter, self.runtime = make_interpreter(str(model_path)), "pycoral"
            except (ValueError, RuntimeError) as exc:  # pycoral: no device attached
                raise InferenceError(f"no Edge TPU available ({exc})") from None
        else:  # the supported path on Bookworm: libedgetpu1-std and the runtime's delegate
            module, runtime = interpreter_module()
            try:
                delegate = module.load_delegate(EDGETPU_LIBRARY)
            except (ValueError, OSError, RuntimeError) as exc:
                raise InferenceError(f"Edge TPU delegate {EDGETPU_LIBRARY} could not be loaded ({exc})") from None
            interpreter = module.Interpreter(model_path=str(model_path), experimental_delegates=[delegate])
            self.runtime = f"{runtime}+{EDGETPU_LIBRARY}"
        super().__init__(interpreter)


#: Coral USB Accelerator (vendor, product) before its firmware loads and after.
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


def edgetpu_present(root: Path = Path("/")) -> str | None:
    """Which Edge TPU is plugged in (a Coral USB Accelerator on the USB bus, or an M.2/PCIe
    one's ``/dev/apex_*``), or None. Read from sysfs and /dev only: nothing is opened, so
    it is safe while the service holds the device."""
    for device in sorted((root / "sys" / "bus" / "usb" / "devices").glob("*")):
        try:
            ids = ((device / "idVendor").read_text().strip(), (device / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in CORAL_USB_IDS:
            return f"Coral USB Accelerator ({ids[0]}:{ids[1]})"
    apex = sorted((root / "dev").glob("apex_*"))
    return f"PCIe Edge TPU ({apex[0].name})" if apex else None


NOT_COMPILED = ("{found} found, but the model bundle is not compiled for it (no model_edgetpu.tflite): run "
                "`blastscope-convert compile BUNDLE` on a workstation with edgetpu_compiler, then install the "
                "compiled bundle with `blastscope-edge model install`")


@dataclass
class BackendSpeed:
    fields: int = 0
    total_ms: float = 0.0

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.fields if self.fields else None


log = logging.getLogger("blastscope.inference")

#: What to do when the Edge TPU is not in use, said once in the journal with the reason.
EDGETPU_ADVICE = ("fields run on the CPU (slower, same calls); check that the Coral USB accelerator is plugged "
                  "into a USB 3 port and that libedgetpu matches the LiteRT in use (docs/deploy.md, \"The Coral\"); "
                  "the daemon tries the Edge TPU again every {every:g} s")


class BackendManager:
    """Chooses the backend (``auto``, ``edgetpu`` or ``cpu``) and keeps the daemon running
    when the accelerator does not: on an Edge TPU error the next field runs on the CPU, the
    degraded state is reported, and the Edge TPU is re-probed every ``reprobe_s`` seconds."""

    def __init__(self, cpu_model: Path, edgetpu_model: Path | None, mode: str = "auto", threads: int = 2,
                 reprobe_s: float = 60.0, edgetpu_factory: Callable[[Path], Backend] = EdgeTpuBackend,
                 clock: Callable[[], float] = time.monotonic,
                 hardware: Callable[[], str | None] = edgetpu_present) -> None:
        self.mode, self.reprobe_s, self.clock = mode, reprobe_s, clock
        self.edgetpu_model, self._factory = edgetpu_model, edgetpu_factory
        self.cpu = CpuBackend(cpu_model, threads)
        self.input_side = self.cpu.input_side
        self.kind = self.cpu.kind
        self.speed: dict[str, BackendSpeed] = {"cpu": BackendSpeed(), "edgetpu": BackendSpeed()}
        self.tpu: Backend | None = None
        self.note: str | None = None  # why the Edge TPU is not in use
        self._next_probe = 0.0
        self._lock = threading.Lock()
        self.busy_since: float | None = None  # monotonic start of the inference under way (watchdog)
        self.unused_tpu: str | None = None
        self._warned: set[str] = set()  # the reasons already in the journal: each is said once
        if mode == "cpu":
            self.note = "CPU backend chosen in the configuration"
        elif edgetpu_model is None:
            found = hardware()
            self.unused_tpu = found  # an accelerator the bundle cannot use: degraded, and says how to fix
            self.note = NOT_COMPILED.format(found=found) if found else \
                "the model bundle has no Edge TPU model (model_edgetpu.tflite)"
        else:
            self._probe()

    @property
    def wants_tpu(self) -> bool:
        return self.mode != "cpu" and self.edgetpu_model is not None

    @property
    def name(self) -> str:
        return "edgetpu" if self.tpu is not None else "cpu"

    @property
    def degraded(self) -> str | None:
        """Set when an Edge TPU should be in use and is not (or when one was asked for)."""
        if self.tpu is not None:
            return None
        if self.wants_tpu or self.mode == "edgetpu" or self.unused_tpu:
            return f"running on CPU: {self.note}"
        return None

    def _probe(self) -> None:
        self._next_probe = self.clock() + self.reprobe_s
        if self.edgetpu_model is None:  # nothing to probe (only probed when wanted); the note says why
            self.tpu = None
            return
        try:
            self.tpu = self._factory(self.edgetpu_model)
            if self.note is not None:
                log.warning("the Edge TPU is in use again (it was not: %s)", self.note)
            self.note = None
        except Exception as exc:  # any failure to open the accelerator means CPU for now
            self.tpu = None
            self.note = str(exc)
            self._warn()

    def probabilities(self, original: np.ndarray, segmented: np.ndarray) -> tuple[np.ndarray, str, float]:
        """Raw probabilities, the backend that produced them and its inference time (ms)."""
        out, backend, ms = self.infer(original, segmented)
        return out.probabilities, backend, ms

    def infer(self, first: np.ndarray, second: np.ndarray) -> tuple[Inference, str, float]:
        """Raw outputs, the backend that produced them and its inference time (ms)."""
        with self._lock:
            # set by the lock holder only: a request that finishes while another waits must not
            # clear the mark of an invoke that hangs
            self.busy_since = time.monotonic()
            try:
                return self._infer(first, second)
            finally:
                self.busy_since = None

    def _probe_when_due(self) -> None:
        """Try the Edge TPU again when it is wanted, not in use and the re-probe interval is up."""
        if self.tpu is None and self.wants_tpu and self.clock() >= self._next_probe:
            self._probe()

    def _infer(self, first: np.ndarray, second: np.ndarray) -> tuple[Inference, str, float]:
        """The work of ``infer``, under its lock."""
        self._probe_when_due()
        if self.tpu is not None:
            start = time.perf_counter()
            try:
                out = self.tpu.infer(first, second)
                return out, "edgetpu", self._record("edgetpu", start)
            except Exception as exc:  # the accelerator failed mid-run: fall back, re-probe later
                self._tpu_failed(exc)
        start = time.perf_counter()
        out = self.cpu.infer(first, second)
        return out, "cpu", self._record("cpu", start)

    def _tpu_failed(self, exc: Exception) -> None:
        """The accelerator failed mid-run: end it, say why, run on the CPU, re-probe later."""
        failed, self.tpu = self.tpu, None
        close = getattr(failed, "close", None)  # a child process (edge.model.edgetpu_process): end it
        if close is not None:
            close()
        self.note = f"Edge TPU failed mid-run ({exc})"
        self._next_probe = self.clock() + self.reprobe_s
        self._warn()

    def _warn(self) -> None:
        """The reason the Edge TPU is not in use, at warning, once per distinct reason: a
        fallback must reach the journal (it reached only the status and the metrics), but a
        re-probe every minute must not fill it."""
        if self.note is not None and self.note not in self._warned:
            self._warned.add(self.note)
            log.warning("the Edge TPU is not in use: %s; %s", self.note, EDGETPU_ADVICE.format(every=self.reprobe_s))

    def infer_views(self, firsts: np.ndarray, seconds: np.ndarray) -> tuple[list[Inference], str, float]:
        """Several input pairs (a cell's views): on the CPU in one invocation, on the Edge TPU
        (compiled for batch 1) one after another; the backend and the total time (ms)."""
        with self._lock:
            self.busy_since = time.monotonic()
            try:
                self._probe_when_due()
                batch = getattr(self.tpu, "infer_batch", None)  # the child process: inputs through shared memory
                if batch is not None:
                    start = time.perf_counter()
                    try:
                        outs = batch(firsts, seconds)
                        ms = self._record("edgetpu", start)
                        self.speed["edgetpu"].fields += len(firsts) - 1  # batch 1 there: an invocation a pair
                        return outs, "edgetpu", ms
                    except Exception as exc:  # noqa: BLE001 - as infer's fallback
                        self._tpu_failed(exc)
                if self.tpu is None:
                    start = time.perf_counter()
                    outs = self.cpu.infer_batch(firsts, seconds)
                    return outs, "cpu", self._record("cpu", start)
            finally:
                self.busy_since = None
        results = [self.infer(a, b) for a, b in zip(firsts, seconds)]
        return [r[0] for r in results], results[-1][1], sum(r[2] for r in results)

    def _record(self, name: str, start: float) -> float:
        ms = timed_ms(start)
        self.speed[name].fields += 1
        self.speed[name].total_ms += ms
        return ms

    def status(self) -> dict[str, Any]:
        return {
            "active": self.name,
            "mode": self.mode,
            "note": self.note,
            "degraded": self.degraded,
            "mean_inference_ms": {k: (round(v.mean_ms, 3) if v.mean_ms is not None else None) for k, v in self.speed.items()},
            "fields": {k: v.fields for k, v in self.speed.items()},
        }


def timed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
