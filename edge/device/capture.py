"""Frame sources behind one interface, and the worker that keeps the latest frame.

Sources: ``picamera2`` (the Pi camera; imported only when chosen, since it exists only on
Raspberry Pi OS), ``opencv:N`` (a USB/V4L2 camera, or ``opencv:PATH`` for a video file)
and ``replay:PATH`` (a folder of images or a video, looped). A camera that disappears is
reopened with exponential back-off and its state reported; it never stops the daemon. Any exception
counts as a lost camera, not only ``CameraError``: on Raspberry Pi OS a numpy ABI mismatch
makes ``import picamera2`` raise ``ValueError`` inside simplejpeg, and a camera thread that
died of it would leave the page saying "starting" forever.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Protocol

import cv2
import numpy as np
from pydantic import Field

from edge.analysis.imagefile import IMAGE_SUFFIXES, read_rgb
from edge.settings import Float, Int, Settings


class CameraConfig(Settings):
    source: Annotated[str, Field(pattern=r"^(picamera2|(opencv|replay):.+)$")] = "picamera2"
    width: Annotated[Int, Field(gt=0)] = 1024
    height: Annotated[Int, Field(gt=0)] = 768
    # frames read per second: the live view (at most live.fps) and a hands-free scan's motion
    # tracking see these; an analysis takes the newest
    fps: Annotated[Float, Field(gt=0, le=60)] = 15.0
    retry_max_seconds: Annotated[Float, Field(gt=0)] = 30.0
    # a Pi camera frame not delivered within this long counts as a lost camera: closed and reopened
    capture_timeout_seconds: Annotated[Float, Field(gt=0, le=60)] = 3.0
    # Exposure and white balance of the Pi camera. picamera2's automatic ones change from field
    # to field, while the quality gate and the model assume one exposure: set by
    # `blastscope-edge camera calibrate` from a blank area of a slide. Empty: automatic.
    exposure_time_us: Annotated[Int, Field(gt=0, le=10_000_000)] | None = None
    analogue_gain: Annotated[Float, Field(ge=1.0, le=16.0)] | None = None
    colour_gains: tuple[Annotated[Float, Field(gt=0, le=32)], Annotated[Float, Field(gt=0, le=32)]] | None = None  # red, blue

    def controls(self) -> dict[str, Any]:
        """The libcamera controls that lock what is set (picamera2's ``set_controls``)."""
        out: dict[str, Any] = {}
        if self.exposure_time_us is not None:
            out.update(AeEnable=False, ExposureTime=int(self.exposure_time_us), AnalogueGain=float(self.analogue_gain or 1.0))
        if self.colour_gains is not None:
            out.update(AwbEnable=False, ColourGains=(float(self.colour_gains[0]), float(self.colour_gains[1])))
        return out

    def settings_text(self) -> dict[str, str]:
        """What the status page says of exposure and white balance."""
        exposure = (f"locked: {self.exposure_time_us} us, analogue gain {self.analogue_gain or 1.0:g}"
                    if self.exposure_time_us is not None else "automatic")
        balance = (f"locked: red {self.colour_gains[0]:g}, blue {self.colour_gains[1]:g}"
                   if self.colour_gains is not None else "automatic")
        return {"exposure": exposure, "white_balance": balance}


log = logging.getLogger("blastscope.capture")

class CameraError(RuntimeError):
    """The source cannot deliver a frame right now; the message says why."""


class Source(Protocol):
    name: str

    def read(self) -> np.ndarray:
        """The next RGB uint8 frame, or raise ``CameraError``."""
        ...

    def close(self) -> None: ...


class ReplaySource:
    """Images from a folder (sorted, looped) or frames from a video file (looped)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"replay:{self.path}"
        self._index = 0
        self._video: cv2.VideoCapture | None = None
        if not self.path.exists():
            raise CameraError(f"{self.path}: replay source not found")

    def _images(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def read(self) -> np.ndarray:
        if not self.path.exists():
            raise CameraError(f"{self.path}: replay source disappeared")
        if self.path.is_dir():
            images = self._images()
            if not images:
                raise CameraError(f"{self.path}: no images to replay")
            path = images[self._index % len(images)]
            self._index += 1
            try:
                return read_rgb(path)
            except (ValueError, OSError) as exc:
                raise CameraError(str(exc)) from None
        if self._video is None:
            self._video = cv2.VideoCapture(str(self.path))
        ok, frame = self._video.read()
        if not ok:  # end of the video: loop
            self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._video.read()
        if not ok:
            self.close()
            raise CameraError(f"{self.path}: no frames could be read from the video")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None


class OpenCVSource:
    """A V4L2/USB camera by index, or a video file by path, through OpenCV."""

    def __init__(self, target: str, width: int, height: int) -> None:
        self.name = f"opencv:{target}"
        try:
            self._capture = cv2.VideoCapture(int(target) if target.isdigit() else target)
        except cv2.error as exc:
            raise CameraError(f"{self.name}: camera could not be opened ({exc})") from None
        if not self._capture.isOpened():
            raise CameraError(f"{self.name}: camera could not be opened")
        if target.isdigit():
            self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def read(self) -> np.ndarray:
        ok, frame = self._capture.read()
        if not ok or frame is None:
            raise CameraError(f"{self.name}: no frame (camera unplugged or stream ended)")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._capture.release()


class Picamera2Source:
    """The Raspberry Pi camera through picamera2 (``python3-picamera2`` from Raspberry Pi OS).

    libcamera gives a camera to one owner at a time: a ``Picamera2`` whose configure or start
    failed still holds it, and every later open then failed "busy" until a restart, so any
    failure here closes it. A sensor that stops delivering makes ``capture_array`` block for
    good (until the watchdog restarted the whole daemon): a capture that has not finished in
    ``timeout_s`` is abandoned and reported, and the worker closes and reopens the camera."""

    def __init__(self, width: int, height: int, timeout_s: float = 3.0, controls: dict[str, Any] | None = None) -> None:
        self.name, self.timeout_s = "picamera2", timeout_s
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise CameraError("picamera2 is not installed (apt install python3-picamera2 on Raspberry Pi OS)") from exc
        except Exception as exc:  # e.g. ValueError from simplejpeg when a pip numpy 2 shadows the system numpy
            raise CameraError(f"picamera2 could not be imported ({type(exc).__name__}: {exc}); the virtual "
                              "environment must use the system numpy: reinstall with deploy/install.sh, "
                              "which applies deploy/constraints-bookworm.txt") from None
        try:
            self._camera = Picamera2()
        except Exception as exc:  # libcamera raises assorted errors when no camera is attached
            raise CameraError(f"picamera2: camera could not be opened ({exc})") from None
        try:
            config = self._camera.create_still_configuration(main={"size": (width, height), "format": "RGB888"})
            self._camera.configure(config)
            if controls:  # locked exposure and white balance, applied from the first frame
                self._camera.set_controls(controls)
            self._camera.start()
        except Exception as exc:
            self.close()  # release the camera, or every retry finds it busy
            raise CameraError(f"picamera2: camera could not be started ({exc})") from None

    def metadata(self) -> dict[str, Any]:
        """The latest frame's metadata (ExposureTime, AnalogueGain, ColourGains ...)."""
        return dict(self._camera.capture_metadata())

    def set_controls(self, controls: dict[str, Any]) -> None:
        self._camera.set_controls(controls)

    def read(self) -> np.ndarray:
        try:
            job = self._camera.capture_array("main", wait=False)
            frame = job.get_result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise CameraError(f"picamera2: no frame within {self.timeout_s:g} s (the sensor stopped delivering)") from None
        except Exception as exc:
            raise CameraError(f"picamera2: capture failed ({exc})") from None
        # picamera2's "RGB888" is laid out B, G, R in memory (libcamera naming); flip to RGB.
        return np.ascontiguousarray(frame[..., 2::-1])

    def close(self) -> None:
        for step in (self._camera.stop, self._camera.close):  # close even when stop fails
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a camera that will not stop must still be released
                log.warning("picamera2: %s failed: %s", step.__name__, exc)


def open_source(spec: str, width: int = 1024, height: int = 768, timeout_s: float = 3.0,
                controls: dict[str, Any] | None = None) -> Source:
    kind, _, target = spec.partition(":")
    if kind == "picamera2":
        return Picamera2Source(width, height, timeout_s, controls)
    if kind == "opencv" and target:
        return OpenCVSource(target, width, height)
    if kind == "replay" and target:
        return ReplaySource(Path(target))
    raise CameraError(f"unknown camera source {spec!r}: use picamera2, opencv:N or replay:PATH")


@dataclass
class CameraState:
    source: str
    connected: bool = False
    error: str | None = None
    frames: int = 0
    reconnects: int = 0
    last_frame_at: float | None = None
    fps: float = 0.0
    heartbeat: float = 0.0  # monotonic time of the worker's last loop, frame or not (watchdog)


class CameraWorker:
    """Reads frames at ``fps`` in a thread and keeps the latest; reopens a lost camera with
    exponential back-off up to ``retry_max_s``. The page's preview and the Analyze button
    both take the latest frame, so a slow phone never stalls the camera."""

    def __init__(self, spec: str, opener: Callable[[str], Source], fps: float, retry_max_s: float) -> None:
        self.spec, self._open, self.period, self.retry_max_s = spec, opener, 1.0 / fps, retry_max_s
        self.state = CameraState(source=spec)
        self._frame: np.ndarray | None = None
        self._lock = threading.Lock()
        self._has_frame = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)

    def start(self) -> "CameraWorker":
        self.state.heartbeat = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def max_frame_age_s(self) -> float:
        """A frame older than this is never analysed: the camera has stalled since."""
        return max(2.0, 5 * self.period)

    def alive(self) -> bool:
        """The worker thread runs and has looped recently (it loops while failing too)."""
        return self._thread.is_alive() and time.monotonic() - self.state.heartbeat < self.retry_max_s + 10

    def latest(self, wait_s: float = 2.0) -> np.ndarray:
        """The newest frame; waits up to ``wait_s`` for one while the camera (re)starts."""
        self._has_frame.wait(wait_s)
        with self._lock:
            if self._frame is None:
                raise CameraError(self.state.error or "no frame from the camera yet")
            age = time.monotonic() - (self.state.last_frame_at or 0.0)
            if age > self.max_frame_age_s:
                raise CameraError(f"the newest frame is {age:.1f} s old: the camera has stopped delivering")
            return self._frame

    def _run(self) -> None:
        source: Source | None = None
        first_backoff = min(0.5, self.retry_max_s)  # the cap is a cap from the first retry on
        backoff = first_backoff
        while not self._stop.is_set():
            self.state.heartbeat = time.monotonic()
            try:
                if source is None:
                    source = self._open(self.spec)
                    if self.state.frames:
                        self.state.reconnects += 1
                started = time.monotonic()
                frame = source.read()
                with self._lock:
                    self._frame = frame
                self._has_frame.set()
                now = time.monotonic()
                if self.state.last_frame_at is not None:
                    dt = now - self.state.last_frame_at
                    self.state.fps = 0.8 * self.state.fps + 0.2 * (1.0 / dt) if dt > 0 else self.state.fps
                self.state.frames += 1
                self.state.last_frame_at, self.state.connected, self.state.error = now, True, None
                backoff = first_backoff
                self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))
            except Exception as exc:  # noqa: BLE001 - whatever a camera stack raises, the worker lives on
                reason = str(exc) if isinstance(exc, CameraError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, CameraError):
                    log.warning("camera %s failed unexpectedly: %s", self.spec, reason)
                self._close(source)
                source = None
                with self._lock:
                    self._frame = None
                self._has_frame.clear()
                self.state.connected, self.state.error = False, f"{reason}; retrying in {backoff:.1f} s"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
        self._close(source)

    def _close(self, source: Source | None) -> None:
        """Close a source that failed; a close that fails too must not end the worker."""
        if source is None:
            return
        try:
            source.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("camera %s: close failed: %s", self.spec, exc)
