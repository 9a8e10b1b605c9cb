"""``blastscope-edge camera calibrate``: lock the Pi camera's exposure and white balance from a
blank area of a slide.

picamera2's automatic exposure and white balance follow what is in view, so a field full of
cells comes out brighter and of another tint than a sparse one, while the quality gate's limits
and the model assume one exposure. A blank area (background only, no cells) is what every
field shares: the camera is left to settle on it, its exposure is scaled so that the blank
background sits at ``TARGET_LEVEL`` (bright, clear of clipping), and its colour gains are
scaled so the background is neutral grey. The result is checked with the locked settings
before it is given, and ``--write`` puts it in the config's ``[camera]`` section.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge.device.capture import CameraError, Picamera2Source

#: The 8-bit level the blank background is brought to.
TARGET_LEVEL = 200.0
#: How far from it (and from grey) the checked result may be.
TOLERANCE = 12.0
#: The longest exposure asked for before the analogue gain is raised instead (a Pi camera at a
#: microscope eyepiece needs a few milliseconds; a long exposure blurs a hand-held slide).
MAX_EXPOSURE_US = 100_000


class CalibrationError(CameraError):
    """The view is not a blank area, or the camera cannot reach the target; says what to do."""


@dataclass(frozen=True)
class CameraCalibration:
    exposure_time_us: int
    analogue_gain: float
    colour_gains: tuple[float, float]
    before: tuple[float, float, float]  # the blank background's mean R, G, B under automatic settings
    after: tuple[float, float, float]  # and with these settings locked

    def settings(self) -> dict[str, Any]:
        return {"exposure_time_us": self.exposure_time_us, "analogue_gain": self.analogue_gain,
                "colour_gains": list(self.colour_gains)}


def _centre(rgb: np.ndarray) -> np.ndarray:
    """The middle half of the frame in each direction: inside the eyepiece disc."""
    h, w = rgb.shape[:2]
    return rgb[h // 4:3 * h // 4, w // 4:3 * w // 4].astype(np.float64)


def not_blank(rgb: np.ndarray) -> str | None:
    """Why this frame is not a blank area of a slide, or None."""
    centre = _centre(rgb)
    grey = centre.mean(axis=2)
    level = float(np.median(grey))
    if level < 20:
        return "the view is dark: switch the lamp on and open the diaphragm"
    if level > 250:
        return "the view is white out: dim the lamp"
    dark = float(np.mean(grey < 0.8 * level))
    if dark > 0.005:
        return (f"{100 * dark:.1f}% of the view is darker than the background (cells or debris): move the slide to "
                "an empty area, between the cells")
    return None


def _mean_rgb(rgb: np.ndarray) -> tuple[float, float, float]:
    r, g, b = _centre(rgb).reshape(-1, 3).mean(0)
    return float(r), float(g), float(b)


def calibrate(open_camera: Callable[[], Picamera2Source], settle_s: float = 2.0) -> CameraCalibration:
    """Settle on automatic settings, derive the locked ones, check them; the camera is closed
    afterwards whatever happens."""
    camera = open_camera()
    try:
        time.sleep(settle_s)  # automatic exposure and white balance converge over a few frames
        frame = camera.read()
        if reason := not_blank(frame):
            raise CalibrationError(f"not a blank area: {reason}")
        meta = camera.metadata()
        try:
            exposure, gain = float(meta["ExposureTime"]), float(meta["AnalogueGain"])
            red_gain, blue_gain = (float(v) for v in meta["ColourGains"])
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"the camera reports no exposure or colour gains ({sorted(meta)})") from None
        before = _mean_rgb(frame)
        r, g, b = before
        total = exposure * gain * TARGET_LEVEL / g  # exposure x gain that brings green to the target
        new_gain = max(1.0, total / MAX_EXPOSURE_US)
        locked = CameraCalibration(int(round(total / new_gain)), round(new_gain, 3),
                                   (round(red_gain * g / r, 4), round(blue_gain * g / b, 4)), before, before)
        camera.set_controls({"AeEnable": False, "ExposureTime": locked.exposure_time_us,
                             "AnalogueGain": locked.analogue_gain, "AwbEnable": False, "ColourGains": locked.colour_gains})
        time.sleep(settle_s)  # the controls take effect a few frames later
        after = _mean_rgb(camera.read())
        if max(abs(v - TARGET_LEVEL) for v in after) > TOLERANCE:
            raise CalibrationError(f"with the new settings the blank area reads R {after[0]:.0f} G {after[1]:.0f} "
                                   f"B {after[2]:.0f}, not {TARGET_LEVEL:.0f} each: check that the lamp is steady and "
                                   "run the calibration again")
        return CameraCalibration(locked.exposure_time_us, locked.analogue_gain, locked.colour_gains, before, after)
    finally:
        camera.close()


def write_settings(config: Path, settings: dict[str, Any]) -> None:
    """Set ``settings`` in the ``[camera]`` section of the TOML file ``config``, replacing a
    line (or a commented-out line) for the same key, adding the section when it is missing;
    every other line is kept as it was."""
    def toml(value: Any) -> str:
        return "[" + ", ".join(toml(v) for v in value) + "]" if isinstance(value, (list, tuple)) else repr(value)

    lines = config.read_text().splitlines() if config.exists() else []
    start = next((i for i, line in enumerate(lines) if line.strip() == "[camera]"), None)
    if start is None:
        lines += ["", "[camera]"]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for key, value in settings.items():
        text = f"{key} = {toml(value)}  # blastscope-edge camera calibrate, {time.strftime('%Y-%m-%d')}"
        pattern = re.compile(rf"^\s*#?\s*{re.escape(key)}\s*=")
        found = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
        if found is None:
            lines.insert(end, text)
            end += 1
        else:
            lines[found] = text
    # written beside it, synced, then renamed over it with its owner and mode: a power cut leaves
    # the old config or the new one, never half of one
    tmp = config.with_name(f".{config.name}.new")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    if config.exists():
        info = config.stat()
        os.chmod(tmp, info.st_mode & 0o7777)
        try:
            os.chown(tmp, info.st_uid, info.st_gid)
        except PermissionError:
            pass  # not root: the file stays the caller's, which is who could write it anyway
    os.replace(tmp, config)
