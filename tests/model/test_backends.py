"""Backend choice and fallback. The real Edge TPU delegate cannot load on this machine (no
Coral device, no libedgetpu), which is exactly the fallback case. Mid-run failure and
recovery use a TEST DOUBLE for the Edge TPU, the only hardware that may be faked."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge.model.bundle import load_bundle
from edge.analysis.imagefile import read_rgb
from edge.model.inference import BackendManager, CpuBackend, EdgeTpuBackend, InferenceError
from edge.pipeline import Pipeline

from conftest import sample_paths


class FakeEdgeTpu:
    """TEST DOUBLE for an Edge TPU: runs the CPU model, and can be told to fail."""

    name = "edgetpu"

    def __init__(self, model_path, fail_after: int | None = None) -> None:
        self.cpu = CpuBackend(model_path)
        self.input_side = self.cpu.input_side
        self.calls, self.fail_after = 0, fail_after

    def infer(self, original, segmented):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("USB transfer failed: device unplugged")
        return self.cpu.infer(original, segmented)


def _inputs():
    """Any pair of uint8 images of the shipped model's input size drives it (224 px for a
    field model, 96 px for the cell model)."""
    import cv2

    from edge.model.bundle import default_bundle_path
    from edge.model.inference import CpuBackend

    side = CpuBackend(default_bundle_path() / "model.tflite", 1).input_side
    field = cv2.resize(read_rgb(sample_paths()[2]), (side, side), interpolation=cv2.INTER_AREA)
    return field, field


def test_real_edgetpu_delegate_cannot_load_here(default_bundle):
    with pytest.raises(InferenceError, match="libedgetpu.so.1"):
        EdgeTpuBackend(default_bundle / "model.tflite")


def test_auto_falls_back_to_cpu_and_says_why(default_bundle, tmp_path):
    edgetpu_model = tmp_path / "model_edgetpu.tflite"
    shutil.copy(default_bundle / "model.tflite", edgetpu_model)
    manager = BackendManager(default_bundle / "model.tflite", edgetpu_model, mode="auto")
    probs, used, ms = manager.probabilities(*_inputs())
    assert used == "cpu" and ms > 0 and np.isclose(probs.sum(), 1, atol=0.02)
    assert "libedgetpu.so.1" in manager.degraded
    plain = BackendManager(default_bundle / "model.tflite", None, mode="auto")
    assert plain.degraded is None and "no Edge TPU model" in plain.note


def test_mid_run_failure_switches_to_cpu_then_reprobes(default_bundle):
    now = [0.0]
    doubles = []

    def factory(path):
        doubles.append(FakeEdgeTpu(path, fail_after=2 if not doubles else None))
        return doubles[-1]

    manager = BackendManager(default_bundle / "model.tflite", default_bundle / "model.tflite", mode="auto",
                             reprobe_s=30, edgetpu_factory=factory, clock=lambda: now[0])
    used = [manager.probabilities(*_inputs())[1] for _ in range(3)]
    assert used == ["edgetpu", "edgetpu", "cpu"]  # the third field ran on the CPU
    assert "failed mid-run" in manager.degraded and "unplugged" in manager.degraded
    now[0] = 10.0
    assert manager.probabilities(*_inputs())[1] == "cpu"  # not re-probed before the interval
    now[0] = 31.0
    assert manager.probabilities(*_inputs())[1] == "edgetpu"  # re-probed, back on the accelerator
    assert manager.degraded is None
    status = manager.status()
    assert status["fields"] == {"cpu": 2, "edgetpu": 3} and status["mean_inference_ms"]["cpu"] > 0


def test_pipeline_records_backend_and_timings(default_bundle):
    bundle = load_bundle(default_bundle)
    manager = BackendManager(bundle.cpu_model, bundle.cpu_model, mode="edgetpu", edgetpu_factory=FakeEdgeTpu)
    result = Pipeline(bundle, manager).process(read_rgb(sample_paths()[3]))
    assert result.backend == "edgetpu" and result.to_dict()["timings_ms"]["inference"] > 0
    assert set(result.timings_ms) >= {"field_of_view", "resize", "quality", "segmentation", "inference", "screening"}


def test_broken_pycoral_falls_through_to_the_delegate_path(default_bundle, tmp_path, monkeypatch):
    """On Bookworm pycoral is absent, or present but built for another Python or numpy: a
    TEST DOUBLE ``pycoral`` package whose import raises must not stop the Edge TPU probe
    from reaching the runtime's own delegate (which then fails here: no libedgetpu)."""
    import sys

    pkg = tmp_path / "pycoral" / "utils"
    pkg.mkdir(parents=True)
    (tmp_path / "pycoral" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "edgetpu.py").write_text("raise ValueError('numpy.dtype size changed, may indicate binary incompatibility')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("pycoral", "pycoral.utils", "pycoral.utils.edgetpu"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(InferenceError, match="Edge TPU delegate libedgetpu.so.1 could not be loaded"):
        EdgeTpuBackend(default_bundle / "model.tflite")


def test_an_edge_tpu_the_bundle_cannot_use_is_reported_with_the_fix(default_bundle, tmp_path):
    """sysfs and /dev of a Pi with a Coral USB Accelerator, laid out in a folder (the
    accelerator itself cannot exist here); the bundle has no compiled model."""
    from edge.model.inference import edgetpu_present

    usb = tmp_path / "sys" / "bus" / "usb" / "devices"
    for name, vendor, product in (("1-1", "1d6b", "0003"), ("2-1", "1a6e", "089a")):
        (usb / name).mkdir(parents=True)
        (usb / name / "idVendor").write_text(vendor + "\n")
        (usb / name / "idProduct").write_text(product + "\n")
    assert edgetpu_present(tmp_path) == "Coral USB Accelerator (1a6e:089a)"
    assert edgetpu_present(tmp_path / "nothing") is None
    manager = BackendManager(default_bundle / "model.tflite", None, mode="auto", hardware=lambda: edgetpu_present(tmp_path))
    assert manager.name == "cpu" and manager.degraded.startswith("running on CPU: Coral USB Accelerator (1a6e:089a) found")
    assert "blastscope-convert compile" in manager.degraded
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "apex_0").touch()
    (usb / "2-1" / "idVendor").write_text("1d6b\n")
    assert edgetpu_present(tmp_path) == "PCIe Edge TPU (apex_0)"
    chosen = BackendManager(default_bundle / "model.tflite", None, mode="cpu", hardware=lambda: edgetpu_present(tmp_path))
    assert chosen.degraded is None  # CPU chosen in the configuration is not degraded


def test_an_edge_tpu_crash_writes_one_warning_line(default_bundle, caplog):
    """Issue 36: "running on CPU: the Edge TPU process died" reached the status and the metrics
    but no line in the journal. A crash is one warning with what to do; the same failure at
    every re-probe is not repeated; the recovery is said too."""
    import logging

    now = [0.0]

    def failing(path, **_):
        raise RuntimeError("the Edge TPU process died (SIGSEGV)")

    factories = [FakeEdgeTpu]
    manager = BackendManager(default_bundle / "model.tflite", default_bundle / "model.tflite", mode="auto",
                             reprobe_s=30, edgetpu_factory=lambda p: (factories[0])(p, fail_after=1),
                             clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="blastscope.inference"):
        manager.probabilities(*_inputs())
        manager.probabilities(*_inputs())  # the double fails: CPU from here
        factories[0] = failing
        for t in (31.0, 62.0, 93.0):  # three re-probes, each failing the same way
            now[0] = t
            assert manager.probabilities(*_inputs())[1] == "cpu"
    lines = [r.getMessage() for r in caplog.records if r.name == "blastscope.inference"]
    assert len([m for m in lines if "failed mid-run" in m]) == 1
    assert len([m for m in lines if "SIGSEGV" in m]) == 1, lines
    assert all("docs/deploy.md" in m for m in lines) and all(r.levelno == logging.WARNING for r in caplog.records)
