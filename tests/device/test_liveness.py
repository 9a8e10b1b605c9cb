"""The watchdog means alive: it stops pinging when an inference hangs or the camera thread
dies, and a frame from a stalled camera is never analysed. The hung Edge TPU and the camera
are TEST DOUBLES (no such hardware here); the pipeline, model and store are real."""

from __future__ import annotations

import threading
import time

import pytest

from edge.model.bundle import load_bundle
from edge.device.capture import CameraError, CameraWorker
from edge.device.config import load_config
from edge.analysis.imagefile import read_rgb
from edge.model.inference import BackendManager, CpuBackend
from edge.device.notify import Watchdog
from edge.pipeline import Pipeline
from edge.device.service import Service
from edge.record.store import Store

from conftest import sample_paths, wait_for as _wait


class HangingEdgeTpu:
    """TEST DOUBLE: an Edge TPU whose invoke never returns (a wedged USB transfer)."""

    name = "edgetpu"

    def __init__(self, model_path) -> None:
        self.input_side = CpuBackend(model_path).input_side
        self.release = threading.Event()

    def infer(self, original, segmented):
        self.release.wait(30)
        raise RuntimeError("USB transfer timed out")


def _service(tmp_path, default_bundle, backends, camera=None) -> Service:
    cfg = load_config(None, environ={}, overrides={"store.state_dir": str(tmp_path), "store.min_free_mb": 0})
    bundle = load_bundle(default_bundle)
    return Service(cfg, bundle, Pipeline(bundle, backends, cfg.quality), Store(tmp_path, cfg.store), camera)


def test_a_hung_inference_stops_the_watchdog(tmp_path, default_bundle, monkeypatch):
    doubles = []

    def factory(path):
        doubles.append(HangingEdgeTpu(path))
        return doubles[-1]

    backends = BackendManager(default_bundle / "model.tflite", default_bundle / "model.tflite", mode="auto",
                              edgetpu_factory=factory)
    service = _service(tmp_path, default_bundle, backends)
    monkeypatch.setattr(Service, "INFERENCE_STALL_S", 0.3)
    pings: list[str] = []
    watchdog = Watchdog(pings.append, 0.05, lambda: service.stalled() is None, lambda: "status").start()
    assert _wait(lambda: len(pings) >= 2)  # idle and healthy: pings
    import cv2

    field = cv2.resize(read_rgb(sample_paths()[0]), (backends.input_side,) * 2, interpolation=cv2.INTER_AREA)
    worker = threading.Thread(target=lambda: backends.probabilities(field, field), daemon=True)
    worker.start()
    try:
        assert _wait(lambda: service.stalled() is not None)
        assert "has not finished" in service.stalled()
        count = len(pings)
        time.sleep(0.3)
        assert len(pings) == count  # no ping while the inference hangs: systemd will restart the daemon
    finally:
        doubles[0].release.set()
        worker.join(5)
        watchdog.stop()
    assert service.stalled() is None and backends.name == "cpu"  # it fell back once the invoke failed
    service.store.close()


def test_a_dead_camera_thread_stops_the_watchdog(tmp_path, default_bundle):
    def opener(spec):  # a failure the worker cannot survive: the thread ends
        raise SystemExit("camera thread killed")

    camera = CameraWorker("picamera2", opener, fps=20, retry_max_s=0.1)
    backends = BackendManager(default_bundle / "model.tflite", None, mode="cpu")
    service = _service(tmp_path, default_bundle, backends, camera)
    camera.start()
    assert _wait(lambda: not camera._thread.is_alive())
    assert service.stalled() == "the camera thread has stopped"
    service.store.close()


def test_a_frame_from_a_stalled_camera_is_never_analysed():
    frame = read_rgb(sample_paths()[0])
    stall = threading.Event()

    class Stalling:  # TEST DOUBLE: a camera that delivers once, then blocks in read()
        name = "stalling"
        reads = 0

        def read(self):
            Stalling.reads += 1
            if Stalling.reads > 1:
                stall.wait(30)
            return frame

        def close(self):
            pass

    worker = CameraWorker("stalling", lambda spec: Stalling(), fps=10, retry_max_s=0.1).start()
    try:
        assert worker.latest().shape == frame.shape
        time.sleep(worker.max_frame_age_s + 0.3)
        with pytest.raises(CameraError, match="s old: the camera has stopped delivering"):
            worker.latest(wait_s=0.1)
    finally:
        stall.set()
        worker.stop()
