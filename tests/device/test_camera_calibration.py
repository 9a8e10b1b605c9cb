"""Locking the Pi camera's exposure and white balance from a blank area of a slide.

The Pi camera cannot exist here: ``picamera2`` is replaced by a TEST DOUBLE that images a
scene the way a camera does (reflectance x lamp x exposure x gain x colour gain, clipped to
8 bits, in picamera2's B, G, R memory order), with automatic exposure aiming at mid-grey and
an automatic white balance that leaves a tint, as the real ones do on a bright blank field."""

from __future__ import annotations

import sys
import textwrap
import types

import cv2
import numpy as np
import pytest

from edge.device.camera_calibration import TARGET_LEVEL, CalibrationError, calibrate, write_settings
from edge.device.capture import Picamera2Source, open_source
from edge.device.config import load_config

from conftest import ROOT, run_cli, sample_paths

DOUBLE = textwrap.dedent('''
    """TEST DOUBLE for picamera2 (the Pi camera cannot exist here): a camera imaging SCENE."""
    import concurrent.futures
    import os

    import numpy as np

    SCENE = None  # (H, W, 3) reflectance in 0..1; set by the test or from $BLASTSCOPE_TEST_SCENE
    LAMP = np.array([1.0, 0.9, 0.75])  # a warm halogen lamp
    last = None

    class Picamera2:
        def __init__(self):
            global last
            last = self
            self.controls = {}
            scene = SCENE if SCENE is not None else np.load(os.environ["BLASTSCOPE_TEST_SCENE"])
            self.scene = scene * LAMP

        def create_still_configuration(self, main):
            return main

        def configure(self, config):
            pass

        def set_controls(self, controls):
            self.controls.update(controls)

        def start(self):
            pass

        def _settings(self):
            c = self.controls
            if c.get("AeEnable", True):  # automatic: mid-grey on average, up to the sensor's longest exposure
                exposure, gain = min(66000.0, 10000.0 * 0.45 / float(self.scene[..., 1].mean())), 1.0
            else:
                exposure, gain = float(c["ExposureTime"]), float(c["AnalogueGain"])
            red, blue = (1.3, 1.6) if c.get("AwbEnable", True) else c["ColourGains"]
            return exposure, gain, (float(red), float(blue))

        def capture_metadata(self):
            exposure, gain, gains = self._settings()
            return {"ExposureTime": int(exposure), "AnalogueGain": gain, "ColourGains": gains}

        def capture_array(self, name="main", wait=None):
            exposure, gain, (red, blue) = self._settings()
            rgb = self.scene * (exposure / 10000.0) * gain * np.array([red, 1.0, blue]) * 255
            frame = np.clip(rgb, 0, 255).astype(np.uint8)[..., ::-1].copy()  # RGB888 is B, G, R in memory
            job = concurrent.futures.Future()
            job.set_result(frame)
            job.get_result = job.result
            return job

        def stop(self):
            pass

        def close(self):
            pass
''')


@pytest.fixture
def camera(monkeypatch, tmp_path):
    module = types.ModuleType("picamera2")
    exec(compile(DOUBLE, "picamera2_double", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return module


def _blank(value=(0.82, 0.8, 0.86)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(np.array(value) + rng.normal(0, 0.004, (768, 1024, 3)), 0, 1)


def _open() -> Picamera2Source:
    return Picamera2Source(1024, 768, 1.0)


def test_a_blank_area_gives_a_locked_exposure_that_puts_the_background_at_the_target(camera):
    camera.SCENE = _blank()
    result = calibrate(_open, settle_s=0)
    assert min(result.before) < TARGET_LEVEL - 40  # automatic: dimmer and tinted
    assert all(abs(v - TARGET_LEVEL) < 3 for v in result.after), result.after
    assert result.analogue_gain == 1.0 and result.exposure_time_us > 10000
    assert camera.last.controls["AeEnable"] is False and camera.last.controls["AwbEnable"] is False


def test_a_view_with_cells_is_refused_with_what_to_do(camera):
    field = cv2.cvtColor(cv2.imread(str(sample_paths()[0])), cv2.COLOR_BGR2RGB)
    camera.SCENE = cv2.resize(field, (1024, 768)).astype(np.float64) / 255
    with pytest.raises(CalibrationError, match="move the slide to an empty area"):
        calibrate(_open, settle_s=0)
    camera.SCENE = _blank((0.005, 0.005, 0.005))
    with pytest.raises(CalibrationError, match="switch the lamp on"):
        calibrate(_open, settle_s=0)


def test_the_settings_are_written_into_the_camera_section_and_the_daemon_applies_them(camera, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "deploy" / "config.example.toml").read_text())
    camera.SCENE = _blank()
    settings = calibrate(_open, settle_s=0).settings()
    write_settings(config, settings)
    write_settings(config, settings)  # again: replaced, not added twice
    text = config.read_text()
    assert text.count("exposure_time_us =") == 1 and "[quality]" in text
    cam = load_config(config, environ={}).camera
    assert cam.exposure_time_us == settings["exposure_time_us"] and list(cam.colour_gains) == settings["colour_gains"]
    assert cam.settings_text()["exposure"].startswith("locked:")
    source = open_source("picamera2", 1024, 768, 1.0, cam.controls())  # what the daemon opens
    try:
        assert camera.last.controls == cam.controls()
        centre = source.read()[192:576, 256:768].reshape(-1, 3).mean(0)
        assert np.all(np.abs(centre - TARGET_LEVEL) < 3)
    finally:
        source.close()


def test_an_uncalibrated_pi_camera_makes_the_status_say_what_to_do(tmp_path):
    from edge.daemon import build_service

    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nstate_dir = "{tmp_path / "state"}"\n[camera]\nsource = "picamera2"\n'
                      '[inference]\nbackend = "cpu"\n')
    status = build_service(load_config(config, environ={})).status()  # the camera is built, never started
    assert status["camera"]["exposure"] == "automatic"
    assert any("camera calibrate" in r for r in status["degraded_reasons"])


@pytest.mark.system
def test_the_command_calibrates_and_writes_the_config(tmp_path):
    (tmp_path / "double").mkdir()
    (tmp_path / "double" / "picamera2.py").write_text(DOUBLE)
    np.save(tmp_path / "scene.npy", _blank())
    config = tmp_path / "config.toml"
    config.write_text('[camera]\nsource = "picamera2"\n')
    env = {"PYTHONPATH": str(tmp_path / "double"), "BLASTSCOPE_TEST_SCENE": str(tmp_path / "scene.npy")}
    r = run_cli("blastscope-edge", "camera", "calibrate", "--config", str(config), "--write", env=env)
    assert r.returncode == 0, r.stderr
    assert "locked: R 20" in r.stdout or "locked: R 19" in r.stdout
    assert load_config(config, environ={}).camera.exposure_time_us is not None
    other = tmp_path / "replay.toml"
    other.write_text('[camera]\nsource = "replay:/tmp"\n')
    r = run_cli("blastscope-edge", "camera", "calibrate", "--config", str(other), env=env)
    assert r.returncode == 2 and "picamera2" in r.stderr and "Traceback" not in r.stderr
