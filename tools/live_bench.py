"""``python -m tools.live_bench``: what the live view sends and costs, on the simulated slide
seen through the eyepiece (``edge.evaluation.virtual_slide``, 640x480 frames, as the scan
bench) fed to a camera worker at the device's default camera rate. One stream runs in real
time for ``--seconds`` with the default live settings and the scan state drawn; prints the
frames per second delivered, the JPEG size per frame, the bandwidth beside its bound, the
encoding time per frame (one thread), and a field's analysis time alone and while a stream runs
(1024x768 eyepiece frames of the sample fields, the shipped bundle on the CPU)."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edge import SAMPLES_DIR
from edge.device.capture import CameraConfig, CameraWorker
from edge.device.live import LiveConfig, LiveView, ScanLook, draw_state, encode
from edge.evaluation.virtual_slide import Stop, eyepiece_view, mosaic, scripted_path


class _SimulatedCamera:
    """The simulated slide as a camera (no Pi camera in a checkout): one frame per read."""

    name = "simulated slide"

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.i = frames, 0

    def read(self) -> np.ndarray:
        self.i += 1
        return self.frames[self.i % len(self.frames)]

    def close(self) -> None:
        pass


def measure(seconds: float) -> dict[str, object]:
    slide = mosaic(sorted(SAMPLES_DIR.glob("*.jpg")))
    rng = np.random.default_rng(0)
    steps = scripted_path([Stop(40, 20, 1.0), Stop(420, 40, 1.0), Stop(800, 220, 1.0)], move_seconds=1.0, fps=30.0)
    frames = [eyepiece_view(slide, x, y, blur, rng) for _, x, y, blur in steps]
    camera_fps = CameraConfig().fps
    camera = CameraWorker("simulated", lambda spec: _SimulatedCamera(frames), fps=camera_fps, retry_max_s=1.0).start()
    config = LiveConfig(stream_seconds=seconds)
    try:
        camera.latest(wait_s=5)
        live = LiveView(camera, config, look=lambda: ScanLook("settling"), stopping=lambda: False)
        start = time.perf_counter()
        sizes = [len(part) for part in live.open()]
        elapsed = time.perf_counter() - start
    finally:
        camera.stop()
    encode_ms = []
    for frame in frames[:60]:
        t = time.perf_counter()
        encode(draw_state(frame, ScanLook("settling")), config.max_side, config.jpeg_quality)
        encode_ms.append((time.perf_counter() - t) * 1000)
    return {
        "frame": f"{frames[0].shape[1]}x{frames[0].shape[0]} camera frames at {camera_fps:g} fps, streamed at most "
                 f"{config.fps:g} fps, {config.max_side} px the longer side, JPEG quality {config.jpeg_quality}",
        "fps_delivered": round(len(sizes) / elapsed, 1),
        "kb_per_frame_mean": round(float(np.mean(sizes)) / 1000, 1),
        "kbit_per_s": round(8 * sum(sizes) / elapsed / 1000, 0),
        "kbit_per_s_bound": config.max_kbps,
        "encode_ms_p50": round(float(np.percentile(encode_ms, 50)), 2),
        "max_streams": config.max_streams,
    }


def analysis_beside_the_stream(fields: int = 24) -> dict[str, float]:
    """A field's analysis (the shipped bundle on the CPU, one thread) alone and while a live
    stream runs in another thread: the p50 milliseconds of each."""
    import threading

    from edge.evaluation.bench import eyepiece_frame
    from edge.analysis.imagefile import read_rgb
    from edge.model.bundle import default_bundle_path, load_bundle
    from edge.pipeline import Pipeline

    from edge.model.inference import InferenceConfig

    # the device's reading (inference.views, adaptive by default), not the converter's every view
    pipeline = Pipeline.on_cpu(load_bundle(default_bundle_path()), threads=1, views=InferenceConfig().views)
    frames = [eyepiece_frame(read_rgb(p)) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]
    pipeline.process(frames[0])

    def timed() -> float:
        times = []
        for i in range(fields):
            t = time.perf_counter()
            pipeline.process(frames[i % len(frames)])
            times.append((time.perf_counter() - t) * 1000)
        return round(float(np.percentile(times, 50)), 1)

    alone = timed()
    camera = CameraWorker("simulated", lambda spec: _SimulatedCamera(frames), fps=CameraConfig().fps, retry_max_s=1.0).start()
    stop = threading.Event()
    try:
        camera.latest(wait_s=5)
        live = LiveView(camera, LiveConfig(stream_seconds=3600), look=lambda: ScanLook("settling"), stopping=stop.is_set)
        stream = live.open()
        reader = threading.Thread(target=lambda: [None for _ in stream], daemon=True)
        reader.start()
        beside = timed()
    finally:
        stop.set()
        camera.stop()
    return {"field_ms_p50_alone": alone, "field_ms_p50_beside_a_live_stream": beside}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.live_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps({**measure(args.seconds), **analysis_beside_the_stream()}, indent=2))


if __name__ == "__main__":
    main()
