"""Static check of a TFLite model against the Edge TPU's documented model requirements.

``edgetpu_compiler`` only runs on x86-64 Linux with Coral's apt repository, so this
check answers the same question wherever the converter runs: will every operation map
to the Edge TPU? It applies the rules Coral documents for compatible models:
- tensors are 8-bit quantized (int32 only for constant biases and operation parameters);
- tensor sizes and model parameters are constant at compile time (static shapes, batch 1);
- tensors have at most 3 dimensions, or only the 3 innermost may be larger than 1
  ([1, 128, 128, 3] is fine, [3, 128, 128, 1] is not);
- a single subgraph (the compiler cannot compile a model with more);
- every operation is on the supported list and meets its listed constraints (MEAN: no
  reduction in the batch dimension, and a reduction over z needs z a multiple of 4);
- the compiler partitions the graph once: the first operation that cannot map and every
  operation after it run on the CPU.
Operation versions are not checked: Coral documents no per-version table to check against.
The output is a per-operation table shaped like the compiler's own log.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
NO_ACTIVATION = schema.ActivationFunctionType.NONE
EIGHT_BIT = {schema.TensorType.INT8, schema.TensorType.UINT8}
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}

MAPPED = "Mapped to Edge TPU"


@dataclass
class _Op:
    name: str
    options: Any
    inputs: list[Any]
    outputs: list[Any]
    input_values: list[np.ndarray | None]


def _no_fused_activation(op: _Op) -> str | None:
    act = getattr(op.options, "fusedActivationFunction", NO_ACTIVATION)
    return None if act == NO_ACTIVATION else "fused activation function is not supported"


def _same_dilation(op: _Op) -> str | None:
    o = op.options
    return None if o.dilationHFactor == o.dilationWFactor else "dilation differs in x and y"


def _not_batch_axis(axis_input: int) -> Callable[[_Op], str | None]:
    def rule(op: _Op) -> str | None:
        values = op.input_values[axis_input] if axis_input < len(op.input_values) else None
        if values is None:
            return "axis is not a compile-time constant"
        rank = len(op.inputs[0].shape)
        return "operates on the batch dimension" if any(int(a) % rank == 0 for a in np.ravel(values)) else None
    return rule


def _pad_rule(op: _Op) -> str | None:
    pads = op.input_values[1]
    if pads is None:
        return "paddings are not a compile-time constant"
    return "pads the batch dimension" if np.any(np.asarray(pads).reshape(-1, 2)[0] != 0) else None


def _pack_rule(op: _Op) -> str | None:
    return "packs in the batch dimension" if op.options.axis == 0 else None


def _softmax_rule(op: _Op) -> str | None:
    shape = [int(d) for d in op.inputs[0].shape]
    if sum(d > 1 for d in shape) > 1:
        return "softmax input must be one-dimensional"
    return "softmax input has more than 16,000 elements" if int(np.prod(shape)) > 16000 else None


def _fc_rule(op: _Op) -> str | None:
    if getattr(op.options, "weightsFormat", 0) != 0:
        return "only the default fully-connected weights format is supported"
    return "output is not one-dimensional" if sum(int(d) > 1 for d in op.outputs[0].shape) > 1 else None


def _concat_rule(op: _Op) -> str | None:
    if _no_fused_activation(op):
        return _no_fused_activation(op)
    constants = [v for v in op.input_values if v is not None]
    if constants and (len(op.inputs) != 2 or any(np.any(v != 0) for v in constants)):
        return "constant inputs to concatenation must be a single all-zero tensor"
    return None


def _mean_rule(op: _Op) -> str | None:
    if batch := _not_batch_axis(1)(op):
        return batch
    shape = [int(d) for d in op.inputs[0].shape]
    reduced = op.input_values[1]
    if reduced is None:  # the axes are computed at run time: nothing to check statically
        return None
    axes = {int(a) % len(shape) for a in np.ravel(reduced)}
    if len(shape) - 1 in axes and shape[-1] % 4:
        return f"reduces over z = {shape[-1]}, which is not a multiple of 4"
    return None


#: Coral's supported-operations table: operation -> constraint checks (empty: none listed).
SUPPORTED: dict[str, list[Callable[[_Op], str | None]]] = {
    "ADD": [], "AVERAGE_POOL_2D": [_no_fused_activation], "CONCATENATION": [_concat_rule],
    "CONV_2D": [_same_dilation], "DEPTHWISE_CONV_2D": [_same_dilation], "EXPAND_DIMS": [],
    "FULLY_CONNECTED": [_fc_rule], "L2_NORMALIZATION": [], "LOGISTIC": [], "LSTM": [],
    "MAXIMUM": [], "MAX_POOL_2D": [_no_fused_activation], "MEAN": [_mean_rule], "MINIMUM": [],
    "MUL": [], "PACK": [_pack_rule], "PAD": [_pad_rule], "PRELU": [], "QUANTIZE": [],
    "REDUCE_MAX": [_not_batch_axis(1)], "REDUCE_MIN": [_not_batch_axis(1)], "RELU": [], "RELU6": [],
    "RELU_N1_TO_1": [], "RESHAPE": [], "RESIZE_BILINEAR": [], "RESIZE_NEAREST_NEIGHBOR": [],
    "RSQRT": [], "SLICE": [], "SOFTMAX": [_softmax_rule], "SPACE_TO_DEPTH": [],
    "SPLIT": [_not_batch_axis(0)], "SQUEEZE": [], "STRIDED_SLICE": [], "SUB": [],
    "SUM": [_not_batch_axis(1)], "SQUARED_DIFFERENCE": [], "TANH": [], "TRANSPOSE": [],
    "TRANSPOSE_CONV": [],
}


@dataclass
class CheckReport:
    model: str
    ops: list[tuple[str, str]] = field(default_factory=list)  # (operation, status) per op
    model_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.model_problems and all(status == MAPPED for _, status in self.ops)

    def rows(self) -> list[tuple[str, int, str]]:
        return [(op, n, status) for (op, status), n in sorted(Counter(self.ops).items())]

    def table(self) -> str:
        lines = [f"Edge TPU static check: {self.model}", "", f"{'Operator':<26}{'Count':>6}  Status"]
        lines += [f"{op:<26}{n:>6}  {status}" for op, n, status in self.rows()]
        lines.append("")
        lines += [f"model: {p}" for p in self.model_problems]
        mapped = sum(status == MAPPED for _, status in self.ops)
        lines.append(f"Operations that would map to the Edge TPU: {mapped} of {len(self.ops)}")
        lines.append("Result: " + ("PASS, every operation meets the documented Edge TPU rules" if self.ok else "FAIL"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "operations": [{"operator": o, "count": n, "status": s} for o, n, s in self.rows()],
                "model_problems": self.model_problems}


def _buffer(model: Any, tensor: Any) -> np.ndarray | None:
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    if data is None or len(data) == 0:
        return None
    dtype = {schema.TensorType.INT32: np.int32, schema.TensorType.INT8: np.int8,
             schema.TensorType.UINT8: np.uint8, schema.TensorType.INT64: np.int64,
             schema.TensorType.FLOAT32: np.float32}.get(tensor.type, np.uint8)
    return np.frombuffer(bytes(bytearray(data)), dtype=dtype)


def check_model(path: Path | str) -> CheckReport:
    """Check a .tflite file; raises ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    try:
        model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    except Exception as exc:  # the flatbuffer reader raises assorted errors on garbage
        raise ValueError(f"{path}: not a TFLite model ({type(exc).__name__})") from None
    report = CheckReport(model=str(path))
    if not model.subgraphs:
        raise ValueError(f"{path}: not a TFLite model (no subgraphs)")
    if len(model.subgraphs) != 1:
        report.model_problems.append(f"{len(model.subgraphs)} subgraphs: the Edge TPU compiler supports exactly one")
    graph = model.subgraphs[0]
    tensors = graph.tensors
    for index in graph.inputs:
        shape = [int(d) for d in tensors[index].shape]
        if not shape or shape[0] != 1:
            report.model_problems.append(f"input {tensors[index].name.decode()} has batch {shape[:1]}, must be 1")

    bias_like: set[int] = set()
    for op in graph.operators:
        name = OP_NAMES.get(max(model.operatorCodes[op.opcodeIndex].builtinCode,
                                model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode), "CUSTOM")
        if name in WEIGHTED_OPS and len(op.inputs) > 2 and op.inputs[2] >= 0:
            bias_like.add(int(op.inputs[2]))

    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = OP_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        ins = [tensors[i] for i in op.inputs if i >= 0]
        outs = [tensors[i] for i in op.outputs]
        problems: list[str] = []
        for i, t in zip([i for i in op.inputs if i >= 0], ins):
            constant = _buffer(model, t) is not None
            if t.type not in EIGHT_BIT and not (t.type == schema.TensorType.INT32 and (constant or i in bias_like)):
                problems.append(f"tensor {t.name.decode()} is {TYPE_NAMES.get(t.type)}, not 8-bit")
            if name in WEIGHTED_OPS and i != op.inputs[0] and not constant:
                problems.append("weights or bias are not compile-time constants")
        for t in ins + outs:
            signature = t.shapeSignature if t.shapeSignature is not None else t.shape
            if signature is not None and any(int(d) < 0 for d in signature):
                problems.append(f"tensor {t.name.decode()} has a dynamic shape")
            if _buffer(model, t) is None and t.shape is not None and any(int(d) > 1 for d in t.shape[:-3]):
                problems.append(f"tensor {t.name.decode()} has shape {[int(d) for d in t.shape]}: only the 3 "
                                "innermost dimensions may be larger than 1")
        for t in outs:
            if t.type not in EIGHT_BIT:
                problems.append(f"output {t.name.decode()} is {TYPE_NAMES.get(t.type)}, not 8-bit")
        if name not in SUPPORTED:
            problems.append("operation is not supported by the Edge TPU")
        else:
            view = _Op(name, op.builtinOptions, ins, outs, [_buffer(model, t) for t in ins])
            problems += [p for rule in SUPPORTED[name] if (p := rule(view))]
        report.ops.append((name, "; ".join(dict.fromkeys(problems)) or MAPPED))
    first = next((i for i, (_, status) in enumerate(report.ops) if status != MAPPED), None)
    if first is not None:  # one partition: everything after the first unmapped operation runs on the CPU
        report.ops = report.ops[:first + 1] + [
            (name, f"runs on the CPU: after the first unmapped operation ({report.ops[first][0]})"
             if status == MAPPED else status) for name, status in report.ops[first + 1:]]
    return report
