"""``blastscope-edge``: run the daemon, classify fields, evaluate a bundle, benchmark the per-field path."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.bundle import BundleError, default_bundle_path, load_bundle
from edge.capture import CameraError
from edge.config import ConfigError
from edge.dataset import DatasetError, load_dataset, read_rgb
from edge.labels import DISPLAY_NAMES
from edge.result import DISCLAIMER
from edge.runtime import RuntimeUnavailable


def _pipeline(args: argparse.Namespace):
    from edge.pipeline import Pipeline

    return Pipeline.on_cpu(load_bundle(args.bundle), threads=args.threads)


def _serve(args: argparse.Namespace) -> int:
    from edge.daemon import serve

    overrides = {"server.host": args.host, "server.port": args.port, "camera.source": args.source,
                 "inference.backend": args.backend, "store.state_dir": args.state_dir,
                 "inference.bundle": str(args.bundle) if args.bundle else None}
    return serve(args.config, overrides, args.demo)


def _describe(path: str, result: dict) -> str:
    if not result["classified"]:
        return f"{path}: not classified: {'; '.join(result['reasons'])}"
    label = DISPLAY_NAMES.get(result["label"], result["label"])
    probs = ", ".join(f"{k} {v:.2f}" for k, v in result["probabilities"].items())
    return (f"{path}: {label}; screening {result['call']} (malignant probability "
            f"{result['malignant_probability']:.2f}); {probs}; {result['cell_count']} cells")


def _classify(args: argparse.Namespace) -> int:
    pipeline = _pipeline(args)
    failures = 0
    results = []
    for path in args.images:
        try:
            rgb = read_rgb(Path(path))
        except (ValueError, OSError) as exc:
            print(f"error: {exc}" if isinstance(exc, ValueError) else f"error: {path}: {exc.strerror}", file=sys.stderr)
            failures += 1
            continue
        result = {"file": path, **pipeline.process(rgb, source=path).to_dict()}
        results.append(result)
        if not args.json:
            print(_describe(path, result))
    if args.json:
        print(json.dumps({"results": results, "disclaimer": DISCLAIMER}, indent=2))
    else:
        print(DISCLAIMER)
    return 1 if failures else 0


def _evaluate(args: argparse.Namespace) -> int:
    from edge.evaluate import evaluate, samples_for_split

    pipeline = _pipeline(args)
    dataset = load_dataset(args.data)
    for path, reason in dataset.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    samples = samples_for_split(pipeline.bundle, dataset, args.split)
    report = evaluate(pipeline, samples)
    report["split"] = args.split
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['n']} fields ({args.split} split), backend {report['backend']}, model {report['model_id']}")
        print(f"accuracy {report['accuracy']:.4f}  malignant sensitivity {report['malignant_sensitivity']:.4f}  "
              f"benign specificity {report['benign_specificity']:.4f}  {report['ms_per_field']:.1f} ms/field")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from edge.bench import run_bench

    report = run_bench(_pipeline(args), repeats=args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['fields']} sample fields x {report['repeats']}, backend {report['backend']}")
    print(f"segmentation 224x224 (1 core): p50 {report['segmentation_224_ms']['p50']} ms, p95 {report['segmentation_224_ms']['p95']} ms"
          f"  | cv2.kmeans reference p50 {report['cv2_kmeans_reference_224_ms']['p50']} ms")
    for size in ("224x224", "1024x768"):
        r = report[size]
        stages = ", ".join(f"{k} {v['p50']}/{v['p95']}" for k, v in r["stages_ms"].items())
        print(f"{size}: end to end p50 {r['end_to_end_ms']['p50']} ms, p95 {r['end_to_end_ms']['p95']} ms, "
              f"{r['fields_per_s']} fields/s; stages p50/p95 ms: {stages}")
    print(f"peak RSS {report['peak_rss_mb']} MB")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blastscope-edge", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bundle", type=Path, default=default_bundle_path(), help="model bundle folder (default: %(default)s)")
    common.add_argument("--threads", type=int, default=2, help="CPU inference threads")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the daemon: camera, analysis, web page and JSON API")
    s.add_argument("--demo", action="store_true", help="replay the shipped sample fields with the shipped model on CPU")
    s.add_argument("--config", type=Path, help="TOML config file (see deploy/config.example.toml)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--source", help="picamera2, opencv:N or replay:PATH")
    s.add_argument("--backend", choices=["auto", "edgetpu", "cpu"])
    s.add_argument("--state-dir")
    s.add_argument("--bundle", type=Path, help="model bundle folder (default: the shipped models/default)")
    s.set_defaults(func=_serve)
    c = sub.add_parser("classify", parents=[common], help="classify image files and print the screening results")
    c.add_argument("images", nargs="+")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_classify)
    e = sub.add_parser("evaluate", parents=[common], help="evaluate the bundle on a labelled folder as the device runs it")
    e.add_argument("--data", required=True, type=Path)
    e.add_argument("--split", default="test", choices=["test", "val", "train", "all"],
                   help="which of the bundle's recorded splits to use (default: test)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_evaluate)
    b = sub.add_parser("bench", parents=[common], help="time the per-field path on the shipped sample fields")
    b.add_argument("--repeats", type=int, default=20)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (BundleError, ConfigError, CameraError, DatasetError, RuntimeUnavailable, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
