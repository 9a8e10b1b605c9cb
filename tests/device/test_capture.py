"""Frame sources and the camera worker, on real image and video files.

The Pi camera cannot exist here: ``picamera2`` is replaced by a TEST DOUBLE module that
mimics the part of its API BlastScope uses (and the BGR memory order of "RGB888")."""

from __future__ import annotations

import shutil
import sys
import time
import types

import cv2
import numpy as np
import pytest

from edge.device.capture import CameraError, CameraWorker, OpenCVSource, ReplaySource, open_source
from edge.analysis.imagefile import read_rgb

from conftest import sample_paths, wait_for as _wait


def _video(path, frames: int = 6):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (224, 224))
    for p in sample_paths()[:frames]:
        writer.write(cv2.imread(str(p)))
    writer.release()
    return path


def test_replay_folder_loops_in_order(tmp_path):
    for p in sample_paths()[:3]:
        shutil.copy(p, tmp_path / p.name)
    source = open_source(f"replay:{tmp_path}")
    frames = [source.read() for _ in range(4)]
    assert np.array_equal(frames[0], read_rgb(sample_paths()[0]))
    assert np.array_equal(frames[3], frames[0])  # looped


def test_replay_video_loops_and_opencv_reads_video(tmp_path):
    video = _video(tmp_path / "smear.avi", frames=3)
    replay = ReplaySource(video)
    frames = [replay.read() for _ in range(5)]
    assert all(f.shape == (224, 224, 3) for f in frames)
    assert np.abs(frames[3].astype(int) - frames[0]).mean() < 2  # frame 4 is frame 1 again (JPEG-coded)
    replay.close()
    cam = open_source(f"opencv:{video}")
    assert isinstance(cam, OpenCVSource) and cam.read().shape == (224, 224, 3)
    cam.close()


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(CameraError, match="replay source not found"):
        open_source(f"replay:{tmp_path / 'none'}")
    with pytest.raises(CameraError, match="could not be opened"):
        open_source("opencv:97")
    with pytest.raises(CameraError, match="unknown camera source"):
        open_source("webcam")


class _Job:
    """TEST DOUBLE for picamera2's Job: ``get_result(timeout)`` as in picamera2/job.py (a
    concurrent.futures.Future underneath); ``None`` never completes, like a stalled sensor."""

    def __init__(self, frame):
        import concurrent.futures

        self._future = concurrent.futures.Future()
        if frame is not None:
            self._future.set_result(frame)

    def get_result(self, timeout=None):
        return self._future.result(timeout=timeout)


class _OneOwnerCamera:
    """TEST DOUBLE for a Raspberry Pi camera under libcamera: one owner at a time (a second
    ``Picamera2()`` while one is not closed fails "busy"); ``fail_start`` makes the next start
    fail; ``stall`` makes captures never complete."""

    owner = None
    fail_start = 0
    stall = False
    opened = 0

    def __init__(self):
        cls = type(self)
        if cls.owner is not None:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        cls.owner, cls.opened = self, cls.opened + 1

    def create_still_configuration(self, main):
        return main

    def configure(self, config):
        pass

    def start(self):
        if type(self).fail_start:
            type(self).fail_start -= 1
            raise RuntimeError("Failed to start streaming: timeout")

    def capture_array(self, stream, wait=None):
        return _Job(None if type(self).stall else np.zeros((768, 1024, 3), np.uint8))

    def stop(self):
        pass

    def close(self):
        if type(self).owner is self:
            type(self).owner = None


@pytest.fixture
def one_owner_camera(monkeypatch):
    camera = type("Camera", (_OneOwnerCamera,), {"owner": None, "fail_start": 0, "stall": False, "opened": 0})
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=camera))
    return camera


def test_a_camera_that_fails_to_start_is_released_so_the_retry_can_open_it(one_owner_camera):
    one_owner_camera.fail_start = 1
    with pytest.raises(CameraError, match="could not be started"):
        open_source("picamera2")
    assert one_owner_camera.owner is None  # released, not held by the failed attempt
    source = open_source("picamera2")  # the retry gets it, instead of "busy" until a restart
    assert source.read().shape == (768, 1024, 3)
    source.close()


def test_a_sensor_that_stops_delivering_is_closed_and_reopened_within_seconds(one_owner_camera):
    """Captures that never complete: the worker reports the camera lost after the capture
    timeout and reopens it (the issue's daemon waited 40-70 s for the watchdog)."""
    worker = CameraWorker("picamera2", lambda spec: open_source(spec, timeout_s=0.3), fps=20, retry_max_s=1.0).start()
    try:
        worker.latest(wait_s=5)
        one_owner_camera.stall = True
        assert _wait(lambda: not worker.state.connected, 5)
        assert "no frame within 0.3 s" in worker.state.error
        assert one_owner_camera.owner is None or one_owner_camera.opened >= 2
        one_owner_camera.stall = False
        assert _wait(lambda: worker.state.connected and worker.state.reconnects >= 1, 5)
        assert worker.latest(wait_s=2).shape == (768, 1024, 3)
    finally:
        worker.stop()


def test_picamera2_source_with_test_double(monkeypatch):
    bgr = cv2.imread(str(sample_paths()[0]))

    class FakePicamera2:  # TEST DOUBLE for the Raspberry Pi camera
        def create_still_configuration(self, main):
            self.requested = main
            return main

        def configure(self, config):
            assert config["format"] == "RGB888"

        def start(self):
            pass

        def capture_array(self, stream, wait=None):
            assert wait is False  # a Job, waited on with a deadline
            return _Job(bgr.copy())  # picamera2's RGB888 is B, G, R in memory

        def stop(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    source = open_source("picamera2", 1024, 768)
    assert np.array_equal(source.read(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    source.close()


def test_picamera2_missing_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="python3-picamera2"):
        open_source("picamera2")


def test_worker_survives_camera_loss_and_reconnects(tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    shutil.copy(sample_paths()[0], folder / "a.jpg")
    worker = CameraWorker(f"replay:{folder}", open_source, fps=20, retry_max_s=0.5).start()
    try:
        assert worker.latest().shape == (224, 224, 3)
        shutil.rmtree(folder)  # the camera disappears mid-run
        assert _wait(lambda: not worker.state.connected)
        assert "disappeared" in worker.state.error or "not found" in worker.state.error
        with pytest.raises(CameraError):
            worker.latest(wait_s=0.1)
        folder.mkdir()
        shutil.copy(sample_paths()[1], folder / "b.jpg")  # and comes back
        assert _wait(lambda: worker.state.connected)
        assert worker.state.reconnects >= 1 and worker.latest().shape == (224, 224, 3)
    finally:
        worker.stop()


# The exact message numpy 2 gives when a module built against numpy 1.x (simplejpeg, under
# picamera2 on Raspberry Pi OS) is imported beside it.
NUMPY_ABI = ("numpy.dtype size changed, may indicate binary incompatibility. "
             "Expected 96 from C header, got 88 from PyObject")


def test_picamera2_import_failing_with_numpy_abi_error_is_reported_and_retried(tmp_path, monkeypatch):
    """A TEST DOUBLE ``picamera2`` module on sys.path: first it fails to import as Raspberry Pi
    OS's does beside a pip numpy 2; then it is 'repaired' and the worker must pick it up."""
    import importlib

    module = tmp_path / "picamera2.py"
    module.write_text(f"raise ValueError({NUMPY_ABI!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    worker = CameraWorker("picamera2", lambda spec: open_source(spec, 224, 224), fps=20, retry_max_s=0.2).start()
    try:
        assert _wait(lambda: worker.state.error is not None)
        assert "ValueError" in worker.state.error and "binary incompatibility" in worker.state.error
        assert "system numpy" in worker.state.error and "retrying in" in worker.state.error
        with pytest.raises(CameraError, match="binary incompatibility"):
            worker.latest(wait_s=0.1)
        bgr = cv2.imread(str(sample_paths()[0]))
        np.save(tmp_path / "frame.npy", bgr)
        module.write_text(  # TEST DOUBLE of the Raspberry Pi camera, now importable
            "import numpy as np\n"
            "class Picamera2:\n"
            "    def create_still_configuration(self, main): return main\n"
            "    def configure(self, config): pass\n"
            "    def start(self): pass\n"
            "    def capture_array(self, stream, wait=None):\n"
            "        import concurrent.futures\n"
            "        job = concurrent.futures.Future()\n"  # picamera2's Job wraps one; get_result(timeout)
            f"        job.set_result(np.load({str(tmp_path / 'frame.npy')!r}))\n"
            "        job.get_result = job.result\n"
            "        return job\n"
            "    def stop(self): pass\n"
            "    def close(self): pass\n")
        importlib.invalidate_caches()
        assert _wait(lambda: worker.state.connected), worker.state.error
        assert np.array_equal(worker.latest(), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        worker.stop()
    assert not worker._thread.is_alive()


@pytest.mark.parametrize("failure", [
    ValueError(NUMPY_ABI), RuntimeError("Camera __init__ sequence did not complete"), OSError(19, "No such device"),
    cv2.error("VIDEOIO: can't open camera"), AttributeError("'NoneType' object has no attribute 'capture_array'"),
    TypeError("unexpected keyword"), MemoryError("dma buffer"), KeyError("main"),
])
@pytest.mark.parametrize("stage", ["open", "read", "close"])
def test_worker_survives_every_kind_of_exception(failure, stage):
    """A source that raises ``failure`` when opened, when read, or when closed after a failed
    read: the worker reports the reason and keeps retrying until the source recovers."""
    good = read_rgb(sample_paths()[0])
    attempts = {"n": 0}

    class Flaky:  # TEST DOUBLE of a camera driver that fails, then recovers
        name = "flaky"

        def read(self):
            if stage in ("read", "close") and attempts["n"] < 3:
                raise failure
            return good

        def close(self):
            if stage == "close":
                raise failure

    def opener(spec):
        attempts["n"] += 1
        if stage == "open" and attempts["n"] < 3:
            raise failure
        return Flaky()

    worker = CameraWorker("flaky", opener, fps=50, retry_max_s=0.05).start()
    try:
        assert _wait(lambda: worker.state.connected), worker.state.error
        assert attempts["n"] >= 3
        assert np.array_equal(worker.latest(), good)
        assert worker._thread.is_alive()
    finally:
        worker.stop()


def test_unexpected_failure_reason_names_the_exception():
    def opener(spec):
        raise RuntimeError("Camera __init__ sequence did not complete")

    worker = CameraWorker("picamera2", opener, fps=20, retry_max_s=0.05).start()
    try:
        assert _wait(lambda: worker.state.error is not None and worker.state.frames == 0)
        assert worker.state.error.startswith("RuntimeError: Camera __init__ sequence did not complete; retrying in")
        time.sleep(0.3)
        assert worker._thread.is_alive() and not worker.state.connected
    finally:
        worker.stop()
