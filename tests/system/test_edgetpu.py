"""Edge TPU static check on real TFLite models, and the compile step.

The compile tests put a STAND-IN for ``edgetpu_compiler`` on PATH (tests/standins): the
real compiler comes only from Coral's apt repository and cannot be installed here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from converter.compile import parse_compiler_log
from converter.edgetpu_check import MAPPED, check_model
from edge.model.bundle import EDGETPU_MODEL, load_bundle, sha256_file
from edge.model.signing import Trust

from conftest import ROOT, run_cli

STANDINS = ROOT / "tests" / "standins"


def _convert(tmp_path: Path, name: str, net, quantized: bool) -> Path:
    """Convert a tf.function to TFLite, full int8 with uint8 input and output when ``quantized``."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
    if quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.random.rand(1, 16, 16, 3).astype(np.float32)] for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    path = tmp_path / name
    path.write_bytes(converter.convert())
    return path


def _tflite(tmp_path: Path, name: str, batch: int | None, quantized: bool, exp: bool) -> Path:
    import tensorflow as tf

    kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([batch, 16, 16, 3], tf.float32)])
    def net(x):
        y = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME"))
        return tf.math.exp(y) if exp else y

    return _convert(tmp_path, name, net, quantized)


def _int8(tmp_path: Path, name: str, channels: int, tail) -> Path:
    """A small full-int8 model: a 3x3 convolution to ``channels`` channels, then ``tail``."""
    import tensorflow as tf

    kernel = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, channels)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def net(x):
        return tail(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME")))

    return _convert(tmp_path, name, net, quantized=True)


def test_only_the_three_innermost_dimensions_may_exceed_one(tmp_path):
    import tensorflow as tf

    bad = check_model(_int8(tmp_path, "outer.tflite", 4, lambda y: tf.reshape(y, [4, 16, 16, 1]) * 2.0))
    status = dict(bad.ops)
    assert not bad.ok and "shape [4, 16, 16, 1]: only the 3 innermost dimensions" in status["RESHAPE"]
    good = check_model(_int8(tmp_path, "inner.tflite", 4, lambda y: tf.reshape(y, [1, 16, 64, 1]) * 2.0))
    assert all("innermost" not in s for _, s in good.ops), good.table()


def test_mean_over_z_needs_a_multiple_of_four(tmp_path):
    import tensorflow as tf

    bad = check_model(_int8(tmp_path, "mean3.tflite", 3, lambda y: tf.reduce_mean(y, axis=3, keepdims=True)))
    assert "reduces over z = 3, which is not a multiple of 4" in dict(bad.ops)["MEAN"]
    good = check_model(_int8(tmp_path, "mean4.tflite", 4, lambda y: tf.reduce_mean(y, axis=3, keepdims=True)))
    assert dict(good.ops)["MEAN"] == MAPPED and good.ok, good.table()
    spatial = check_model(_int8(tmp_path, "mean_hw.tflite", 3, lambda y: tf.reduce_mean(y, axis=[1, 2])))
    assert dict(spatial.ops)["MEAN"] == MAPPED


def test_everything_after_the_first_unmapped_operation_runs_on_the_cpu(tmp_path):
    import tensorflow as tf

    kernel = tf.constant(np.random.default_rng(1).normal(size=(1, 1, 4, 4)).astype(np.float32))
    report = check_model(_int8(tmp_path, "split.tflite", 4,
                               lambda y: tf.nn.relu(tf.nn.conv2d(tf.nn.leaky_relu(y, 0.1), kernel, 1, "SAME"))))
    names = [name for name, _ in report.ops]
    statuses = [status for _, status in report.ops]
    first = names.index("LEAKY_RELU")
    assert statuses[first] == "operation is not supported by the Edge TPU"
    assert all(s == MAPPED for s in statuses[:first])
    assert statuses[first + 1:] and all(s.startswith("runs on the CPU: after the first unmapped operation (LEAKY_RELU)")
                                        for s in statuses[first + 1:])


def test_shipped_model_passes_every_rule(default_bundle):
    report = check_model(default_bundle / "model.tflite")
    assert report.ok, report.table()
    ops = {op for op, _ in report.ops}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX", "CONCATENATION"} <= ops
    result = run_cli("blastscope-convert", "check", str(default_bundle / "model.tflite"))
    assert result.returncode == 0, result.stderr
    assert "Mapped to Edge TPU" in result.stdout and "Result: PASS" in result.stdout


def test_float_model_with_unsupported_op_fails(tmp_path):
    path = _tflite(tmp_path, "float_exp.tflite", batch=1, quantized=False, exp=True)
    report = check_model(path)
    status = dict(report.ops)
    assert not report.ok
    assert "not 8-bit" in status["CONV_2D"]
    assert "operation is not supported by the Edge TPU" in status["EXP"]
    result = run_cli("blastscope-convert", "check", str(path))
    assert result.returncode == 1 and "Result: FAIL" in result.stdout


def test_dynamic_batch_int8_model_fails(tmp_path):
    path = _tflite(tmp_path, "dynamic.tflite", batch=None, quantized=True, exp=False)
    report = check_model(path)
    assert not report.ok
    assert any("dynamic shape" in status for _, status in report.ops)
    fixed = check_model(_tflite(tmp_path, "fixed.tflite", batch=1, quantized=True, exp=False))
    assert fixed.ok and all(status == MAPPED for _, status in fixed.ops), fixed.table()


def test_check_refuses_a_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "photo.tflite"
    junk.write_bytes(b"\xff\xd8\xff\xe0 definitely a jpeg")
    result = run_cli("blastscope-convert", "check", str(junk))
    assert result.returncode == 2
    assert f"{junk}: not a TFLite model" in result.stderr and "Traceback" not in result.stderr


def test_compile_without_compiler_says_so_and_keeps_cpu_model(bundle_copy):
    before = sha256_file(bundle_copy / "manifest.json")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "edgetpu_compiler").exists())
    result = run_cli("blastscope-convert", "compile", str(bundle_copy), env={"PATH": path})
    assert result.returncode == 0
    assert "edgetpu_compiler is not installed" in result.stdout
    assert sha256_file(bundle_copy / "manifest.json") == before
    assert not (bundle_copy / EDGETPU_MODEL).exists()


def test_compile_with_standin_adds_edgetpu_model_and_log(bundle_copy):
    env = {"PATH": f"{STANDINS}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("blastscope-convert", "compile", str(bundle_copy), env=env)
    assert result.returncode == 0, result.stderr
    assert "its signature was removed: sign the bundle again" in result.stdout
    assert not (bundle_copy / "manifest.sig").exists()
    bundle = load_bundle(bundle_copy, Trust(allow_unsigned=True))  # hashes verified, including the new file
    assert bundle.edgetpu_model == bundle_copy / EDGETPU_MODEL
    edgetpu = bundle.manifest["edgetpu"]
    assert edgetpu["compiled"] and edgetpu["ops_on_edgetpu"] == 136 and edgetpu["ops_on_cpu"] == 0
    assert edgetpu["on_chip_memory"] == "4.41MiB" and edgetpu["off_chip_memory"] == "0.00B"
    assert "Compiled with edgetpu_compiler" in (bundle_copy / "MODEL_CARD.md").read_text()


def test_compile_failure_leaves_bundle_unchanged(bundle_copy):
    before = {p.name: sha256_file(p) for p in bundle_copy.iterdir()}
    env = {"PATH": f"{STANDINS}{os.pathsep}{os.environ['PATH']}", "STANDIN_FAIL": "1"}
    result = run_cli("blastscope-convert", "compile", str(bundle_copy), env=env)
    assert result.returncode == 1 and "edgetpu_compiler failed" in result.stdout
    assert {p.name: sha256_file(p) for p in bundle_copy.iterdir()} == before


def test_parse_compiler_log_partial_mapping():
    log = """Edge TPU Compiler version 16.0.384591198
On-chip memory used for caching model parameters: 3.00MiB
Off-chip memory used for streaming uncached model parameters: 1.25MiB
Operator                       Count      Status
CONV_2D                        10         Mapped to Edge TPU
EXP                            1          Operation not supported
CONV_2D                        2          More than one subgraph is not supported
"""
    parsed = parse_compiler_log(log)
    assert parsed["compiler_version"] == "16.0.384591198"
    assert parsed["ops_on_edgetpu"] == 10 and parsed["ops_on_cpu"] == 3
    assert parsed["off_chip_memory"] == "1.25MiB"
    assert parsed["operations"][1] == {"operator": "EXP", "count": 1, "status": "Operation not supported"}
