"""``blastscope-convert``: build a bundle, check a model for the Edge TPU, compile a bundle."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from edge.bundle import CPU_MODEL, EDGETPU_MODEL, BundleError, load_bundle
from edge.dataset import DatasetError


def _log(message: str) -> None:
    print(message, flush=True)


def _build(args: argparse.Namespace) -> int:
    from converter.build import BuildConfig, build
    from converter.split import SplitConfig
    from converter.train import TrainConfig

    cfg = BuildConfig(
        data=Path(args.data), out=Path(args.out), weights=args.weights,
        work=Path(args.work) if args.work else None,
        train=TrainConfig(seed=args.seed, **{k: v for k, v in (
            ("head_epochs", args.head_epochs), ("finetune_epochs", args.finetune_epochs),
            ("finetune_layers", args.finetune_layers), ("batch_size", args.batch_size)) if v is not None}),
        split=SplitConfig(block_size=args.block_size, seed=args.seed),
        representative_size=args.representative_size,
        command=" ".join(["blastscope-convert", *sys.argv[1:]]),
    )
    if args.weights != "imagenet" and not Path(args.weights).is_file():
        print(f"error: {args.weights}: weights file not found", file=sys.stderr)
        return 2
    out = build(cfg, _log)
    _log(f"bundle written to {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from converter.edgetpu_check import check_model

    report = check_model(Path(args.model))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0 if report.ok else 1


def _compile(args: argparse.Namespace) -> int:
    from converter.bundle import rewrite_bundle
    from converter.compile import compile_for_edgetpu

    root = Path(args.bundle)
    bundle = load_bundle(root)
    with tempfile.TemporaryDirectory() as tmp:
        result = compile_for_edgetpu(bundle.cpu_model, Path(tmp))
        print(result.summary)
        if not result.compiled:
            return 0 if "not installed" in result.summary else 1
        rewrite_bundle(root, {EDGETPU_MODEL: result.model}, edgetpu=result.to_dict())
    print(f"{root / EDGETPU_MODEL} added; {root / CPU_MODEL} kept for CPU fallback")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blastscope-convert", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train, quantize, calibrate, evaluate, check, compile and write a bundle")
    b.add_argument("--data", required=True, help="labelled image folder (class folders or Kaggle ALL layout)")
    b.add_argument("--weights", default="imagenet", help="MobileNetV2 no-top .weights.h5 path, or 'imagenet' (needs internet)")
    b.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    b.add_argument("--work", help="folder that keeps the trained Keras model; a model there is reused")
    b.add_argument("--head-epochs", type=int, help="default: TrainConfig.head_epochs (4)")
    b.add_argument("--finetune-epochs", type=int, help="default: TrainConfig.finetune_epochs (12)")
    b.add_argument("--finetune-layers", type=int, help="default: TrainConfig.finetune_layers (80)")
    b.add_argument("--batch-size", type=int, help="default: TrainConfig.batch_size (32)")
    b.add_argument("--block-size", type=int, default=25, help="file numbers per split block (patient proxy)")
    b.add_argument("--representative-size", type=int, default=300,
                   help="training fields used to calibrate int8 ranges (300 and 1000 measured within noise of each other)")
    b.add_argument("--seed", type=int, default=1234)
    b.set_defaults(func=_build)
    c = sub.add_parser("check", help="static Edge TPU compatibility check of a .tflite model")
    c.add_argument("model")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_check)
    k = sub.add_parser("compile", help="compile a bundle's model with edgetpu_compiler when installed")
    k.add_argument("bundle")
    k.set_defaults(func=_compile)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (BundleError, DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
