"""``python -m tools.scan_bench``: what the hands-free scanner costs per camera frame and how
well it tracks, on the simulated slide (``edge.evaluation.virtual_slide``: the sample fields
tiled, 640x480 eyepiece frames at 30 fps, a scripted path of pauses, a refocus, moves and a
return). Prints the per-frame time by scanner state beside the frame period, the fields taken,
and the largest tracking error as a share of a field's width. Frames are made before timing,
so the figures are the scanner's alone (one thread)."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edge import SAMPLES_DIR
from edge.device.scan import ScanConfig, Scanner
from edge.evaluation.virtual_slide import Stop, eyepiece_view, mosaic, scripted_path
from edge.model.bundle import default_bundle_path, load_bundle
from edge.pipeline import Pipeline

STOPS = [Stop(40, 20, 1.0), Stop(420, 40, 1.2, blurred=0.5), Stop(800, 220, 1.0), Stop(50, 30, 1.0)]
FPS = 30.0


def measure(repeats: int = 3) -> dict[str, object]:
    slide = mosaic(sorted(SAMPLES_DIR.glob("*.jpg")))
    rng = np.random.default_rng(0)
    steps = scripted_path(STOPS, move_seconds=1.0, fps=FPS)
    frames = [eyepiece_view(slide, x, y, blur, rng) for _, x, y, blur in steps]
    limits = Pipeline.on_cpu(load_bundle(default_bundle_path())).limits
    by_state: dict[str, list[float]] = {}
    every: list[float] = []
    worst, captured = 0.0, 0
    for _ in range(repeats):
        scanner = Scanner(ScanConfig(), limits)
        for (t, x, y, _), frame in zip(steps, frames):
            start = time.perf_counter()
            event = scanner.feed(frame, t)
            ms = (time.perf_counter() - start) * 1000
            every.append(ms)
            by_state.setdefault(event.state, []).append(ms)
            error = float(np.hypot(event.position[0] - (x - STOPS[0].x), event.position[1] - (y - STOPS[0].y)))
            worst = max(worst, error / min(s for _, _, s in scanner.fields) if scanner.fields else 0.0)
        captured = len(scanner.fields)
    period = 1000 / FPS
    return {
        "input": f"{len(frames)} simulated 640x480 eyepiece frames at {FPS:g} fps, {repeats} repeats",
        "frame_period_ms": round(period, 2),
        "per_frame_ms": {"mean": round(float(np.mean(every)), 2), "p50": round(float(np.median(every)), 2),
                         "p95": round(float(np.percentile(every, 95)), 2)},
        "mean_share_of_frame_period": round(float(np.mean(every)) / period, 3),
        "by_state_ms_p50": {k: round(float(np.median(v)), 2) for k, v in sorted(by_state.items())},
        "fields_taken": captured,
        "largest_tracking_error_of_field_width": round(worst, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.scan_bench", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = measure(args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    per = report["per_frame_ms"]
    assert isinstance(per, dict)
    print(report["input"])
    print(f"scanner per frame: mean {per['mean']} ms, p50 {per['p50']} ms, p95 {per['p95']} ms; frame period "
          f"{report['frame_period_ms']} ms (mean {report['mean_share_of_frame_period']:.1%} of it)")
    by_state = report["by_state_ms_p50"]
    assert isinstance(by_state, dict)
    print("p50 by state (ms): " + ", ".join(f"{k} {v}" for k, v in by_state.items()))
    print(f"fields taken {report['fields_taken']} (the path has 3 new areas and one return); largest tracking "
          f"error {report['largest_tracking_error_of_field_width']:.1%} of a field's width")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
