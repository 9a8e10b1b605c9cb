"""``blastscope-convert``: build a bundle, check a model for the Edge TPU, compile a bundle,
make a signing key and sign a bundle (last: any rewrite drops the signature)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from edge.analysis.morphology import ELEMENTS
from edge.model.bundle import CPU_MODEL, EDGETPU_MODEL, BundleError, load_bundle
from edge.evaluation.dataset import DatasetError
from edge.model.signing import SIGNATURE, SignatureError, Trust, generate_key, key_id, sign_manifest


def _as_written(root: Path):
    """Load a bundle the converter made: every hash and the model id are verified, and a
    signature, when there is one, must match its own key (which key to trust is the
    device's decision, not the converter's)."""
    signature = Path(root) / SIGNATURE
    keys: tuple[str, ...] = ()
    if signature.exists():
        try:
            keys = (str(json.loads(signature.read_text())["key"]),)
        except (ValueError, KeyError, TypeError):
            keys = ()
    return load_bundle(root, Trust(keys, allow_unsigned=True))


def _history(root: Path) -> list[dict[str, str]]:
    """The bundle's record of the commands that changed it after its build, plus this one."""
    import time

    previous = json.loads((root / "manifest.json").read_text()).get("history", [])
    return [*previous, {"command": " ".join(["blastscope-convert", *sys.argv[1:]]),
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]


def _log(message: str) -> None:
    print(message, flush=True)


def _written(out: Path, sign_key: str | None) -> int:
    """Say where a build wrote its bundle, and sign it when a key was given."""
    _log(f"bundle written to {out}")
    if sign_key:
        _log(f"signed by key {key_id(sign_manifest(out, Path(sign_key)))}")
    else:
        _log("not signed: a device runs it only after `blastscope-convert sign` (or with inference.allow_unsigned)")
    return 0


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
    return _written(build(cfg, _log), args.sign_key)


def _build_differential(args: argparse.Namespace) -> int:
    from converter.differential_build import build_differential

    return _written(build_differential(Path(args.data), Path(args.pbc), Path(args.work), Path(args.out), args.weights,
                                       _log), args.sign_key)


def _build_cells(args: argparse.Namespace) -> int:
    from converter.cell_build import CellBuildConfig, build_cells
    from converter.cell_train import CellTrainConfig
    from edge.analysis.cells import CellParams
    from edge.analysis.segmentation import SegmentationParams
    from converter.split import SplitConfig

    if args.weights != "imagenet" and not Path(args.weights).is_file():
        print(f"error: {args.weights}: weights file not found", file=sys.stderr)
        return 2
    if args.init_model and not Path(args.init_model).is_file():
        print(f"error: {args.init_model}: trained cell model not found", file=sys.stderr)
        return 2
    cfg = CellBuildConfig(
        data=Path(args.data), out=Path(args.out), weights=args.weights, work=Path(args.work) if args.work else None,
        train=CellTrainConfig(seed=args.seed, **{k: v for k, v in (
            ("head_epochs", args.head_epochs), ("finetune_epochs", args.finetune_epochs),
            ("cells_per_epoch", args.cells_per_epoch), ("finetune_schedule", args.finetune_schedule),
            ("finetune_learning_rate", args.finetune_lr), ("average_last", args.average_last),
            ("field_loss_weight", args.field_loss_weight))
            if v is not None}),
        init_model=Path(args.init_model) if args.init_model else None,
        split=SplitConfig(block_size=args.block_size, seed=args.seed),
        cells=CellParams(views=args.views),
        segmentation=SegmentationParams(element=args.element, resplit=args.resplit),
        command=" ".join(["blastscope-convert", *sys.argv[1:]]),
    )
    return _written(build_cells(cfg, _log), args.sign_key)


def _check(args: argparse.Namespace) -> int:
    from converter.edgetpu_check import check_model

    report = check_model(Path(args.model))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    return 0 if report.ok else 1


def _compile(args: argparse.Namespace) -> int:
    from converter.bundle import rewrite_bundle
    from converter.compile import compile_for_edgetpu

    root = Path(args.bundle)
    bundle = _as_written(root)
    with tempfile.TemporaryDirectory() as tmp:
        result = compile_for_edgetpu(bundle.cpu_model, Path(tmp))
        print(result.summary)
        if not result.compiled:
            return 0 if "not installed" in result.summary else 1
        assert result.model is not None  # compiled: the compiler wrote a model
        rewrite_bundle(root, {EDGETPU_MODEL: result.model}, edgetpu=result.to_dict())
    print(f"{root / EDGETPU_MODEL} added; {root / CPU_MODEL} kept for CPU fallback")
    if bundle.signer:
        print("the manifest changed, so its signature was removed: sign the bundle again (blastscope-convert sign)")
    return 0


def _rewritten(root: Path, updates: dict, sign_key: str | None, done: str) -> int:
    """Rewrite a bundle with ``updates`` (recording the command in its history), sign it when
    a key is given, verify it as written and say what it now is."""
    from converter.bundle import rewrite_bundle

    rewrite_bundle(root, sign_key=Path(sign_key) if sign_key else None, history=_history(root), **updates)
    bundle = _as_written(root)
    _log(f"bundle {root} {done}: model id {bundle.model_id}, "
         f"{'signed by key ' + key_id(bundle.signer) if bundle.signer else 'not signed (sign it before a device runs it)'}")
    return 0


def _refit(args: argparse.Namespace) -> int:
    from converter.refit import refit

    root = Path(args.bundle)
    return _rewritten(root, refit(_as_written(root), Path(args.data), _log, views=args.views,
                                             resplit=args.resplit, partition=args.partition,
                                             out_of_fold=Path(args.out_of_fold) if args.out_of_fold else None),
                      args.sign_key,
                      "re-measured")


def _fit_appearance(args: argparse.Namespace) -> int:
    from converter.appearance import add_to_bundle

    root = Path(args.bundle)
    updates = add_to_bundle(_as_written(root), Path(args.data), log=_log)
    return _rewritten(root, updates, args.sign_key,
                      f"appearance check added (limit {updates['ood_appearance']['limit']:.2f})")


def _fit_checks(args: argparse.Namespace) -> int:
    from converter.appearance import add_to_bundle

    root = Path(args.bundle)
    updates = add_to_bundle(_as_written(root), Path(args.data), log=_log, embedding=True)
    return _rewritten(root, updates, args.sign_key,
                      f"both checks fitted again (embedding limit {updates['ood']['limit']:.2f}, "
                      f"appearance limit {updates['ood_appearance']['limit']:.2f})")


def _fit_cell_count(args: argparse.Namespace) -> int:
    from converter.cell_count import fit_cell_count

    root = Path(args.bundle)
    updates = fit_cell_count(_as_written(root), Path(args.data), log=_log)
    count = updates["calibration"]["min_cells_to_clear"]
    return _rewritten(root, updates, args.sign_key, f"fitted: a negative call needs {count} recognised cell(s)")


def _compare_pools(args: argparse.Namespace) -> int:
    from converter.pooling import compare, field_cells, table
    from edge.evaluation.dataset import load_dataset
    from edge.evaluation.evaluate import samples_for_split

    bundle = _as_written(Path(args.bundle))
    if bundle.kind != "cells":
        raise BundleError(f"{args.bundle}: a {bundle.kind} bundle has no cells to pool")
    samples = samples_for_split(bundle, load_dataset(Path(args.data)), args.split)
    _log(f"{len(samples)} {args.split} fields through the device pipeline")
    print(table(compare(bundle, field_cells(bundle, samples)), args.split))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    public = generate_key(Path(args.out))
    print(f"private key written to {args.out} (mode 0600): keep it off every device")
    print(f"public key, for the devices' inference.trusted_keys:\n{public}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    root = Path(args.bundle)
    bundle = _as_written(root)  # never sign what does not verify
    public = sign_manifest(root, Path(args.key))
    load_bundle(root, Trust((public,)))
    print(f"signed bundle {bundle.model_id} with key {key_id(public)}: {public}")
    return 0


def parser() -> argparse.ArgumentParser:
    import edge

    p = argparse.ArgumentParser(prog="blastscope-convert", description=__doc__)
    p.add_argument("--version", action="version", version=f"blastscope-convert {edge.__version__}")
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
    b.add_argument("--sign-key", help="Ed25519 private key (PEM) to sign the bundle with (see keygen)")
    b.set_defaults(func=_build)
    bc = sub.add_parser("build-cells", help="the cell model: cut the white cells, train, quantize, fit the "
                        "out-of-distribution check, calibration, gate and case rule, evaluate, write a bundle")
    bc.add_argument("--data", required=True, help="labelled image folder (class folders or Kaggle ALL layout)")
    bc.add_argument("--weights", default="imagenet", help="MobileNetV2 no-top .weights.h5 path, or 'imagenet'")
    bc.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    bc.add_argument("--work", help="folder that keeps the cell crops and the trained model; reused when present")
    bc.add_argument("--head-epochs", type=int, help="default: CellTrainConfig.head_epochs")
    bc.add_argument("--finetune-epochs", type=int, help="default: CellTrainConfig.finetune_epochs")
    bc.add_argument("--cells-per-epoch", type=int, help="default: CellTrainConfig.cells_per_epoch")
    bc.add_argument("--finetune-schedule", choices=("cosine", "constant"),
                    help="fine-tuning learning rate: cosine decay (default) or constant")
    bc.add_argument("--finetune-lr", type=float, help="default: CellTrainConfig.finetune_learning_rate")
    bc.add_argument("--average-last", type=int,
                    help="keep the mean of the weights of the last N fine-tuning epochs (default: none)")
    bc.add_argument("--field-loss-weight", type=float,
                    help="multiple-instance fine-tuning: share of the loss on the fields' pooled calls (default 0)")
    bc.add_argument("--init-model", help="a trained Keras cell model (.keras) to go on training from")
    bc.add_argument("--views", type=int, choices=range(1, 9), metavar="1-8", default=8,
                    help="orientations each cell is read in on the device, calibration included (default 8: all)")
    bc.add_argument("--element", choices=ELEMENTS, default="ellipse",
                    help="structuring element of the segmentation and the cell path, recorded in the bundle: "
                    "'disc' is the same under every turn of the field, 'ellipse' is OpenCV's (default)")
    bc.add_argument("--resplit", action=argparse.BooleanOptionalAction, default=True,
                    help="split a field whose a* centres are close a second time, to find its few white cells "
                    "(default: on; --no-resplit refuses such fields as faintly stained)")
    bc.add_argument("--block-size", type=int, default=25, help="file numbers per split block (patient proxy)")
    bc.add_argument("--seed", type=int, default=1234)
    bc.add_argument("--sign-key", help="Ed25519 private key (PEM) to sign the bundle with (see keygen)")
    bc.set_defaults(func=_build_cells)
    bd = sub.add_parser("build-differential", help="the differential cell model (issue 32), trained by "
                        "python -m converter.differential_train into --work: int8, checks fitted on both sites' cells, "
                        "calibration, gate, case rule, every figure, bundle")
    bd.add_argument("--data", required=True, help="all-pbs-224 (labelled per field)")
    bd.add_argument("--pbc", required=True, help="pbc-normal (labelled per cell)")
    bd.add_argument("--work", required=True, help="the training's folder: differential.keras and the cell caches")
    bd.add_argument("--weights", default="", help="the ImageNet weights the training started from (recorded)")
    bd.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    bd.add_argument("--sign-key", help="Ed25519 private key (PEM) to sign the bundle with (see keygen)")
    bd.set_defaults(func=_build_differential)
    c = sub.add_parser("check", help="static Edge TPU compatibility check of a .tflite model")
    c.add_argument("model")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_check)
    k = sub.add_parser("compile", help="compile a bundle's model with edgetpu_compiler when installed")
    k.add_argument("bundle")
    k.set_defaults(func=_compile)
    def rewriting(name: str, summary: str, func) -> argparse.ArgumentParser:
        """A command that measures a bundle on its dataset and rewrites it (signed when asked)."""
        command = sub.add_parser(name, help=summary)
        command.add_argument("bundle")
        command.add_argument("--data", required=True, help="the labelled dataset the bundle was built from")
        command.add_argument("--sign-key", help="Ed25519 private key (PEM) to sign the rewritten bundle with")
        command.set_defaults(func=func)
        return command

    r = rewriting("refit", "re-measure a bundle as the device runs it (int8 metrics on the label shown, case rule "
                  "from validation, case figures on test) without retraining", _refit)
    r.add_argument("--views", type=int, choices=range(1, 9), metavar="1-8",
                   help="read each cell in this many orientations from now on (8: every orientation of the square)")
    r.add_argument("--resplit", action=argparse.BooleanOptionalAction,
                   help="split a field whose a* centres are close a second time, to find its few white cells, "
                   "instead of refusing it as faintly stained (default: as the bundle says)")
    r.add_argument("--partition", choices=["watershed", "nearest_core"],
                   help="how touching cells are cut apart from now on (nearest_core: one nucleus per box; "
                   "default: as the bundle says)")
    r.add_argument("--out-of-fold", metavar="DIR",
                   help="fit the threshold, band and case rule on the out-of-fold fields of every training block "
                   "(python -m converter.differential_kfold's oof_fold*.npz in DIR) instead of on validation, "
                   "which then checks them")
    rewriting("fit-appearance", "add the field-level appearance check to a cell bundle (fitted on its training "
              "cells, limit from validation under benign conditions) and re-measure it", _fit_appearance)
    rewriting("fit-checks", "fit both out-of-distribution checks of a cell bundle again (the cells' embedding and "
              "their appearance) on its training cells as the device now cuts them, and re-measure it", _fit_checks)
    rewriting("fit-cell-count", "fit the fewest recognised cells a negative field call may rest on (validation "
              "under every capture condition), then re-measure the bundle as refit does", _fit_cell_count)
    pc = sub.add_parser("compare-pools", help="compare the rules that turn a field's cells into its call, on "
                        "validation through the device pipeline (never on test)")
    pc.add_argument("bundle")
    pc.add_argument("--data", required=True, help="the labelled dataset the bundle was built from")
    pc.add_argument("--split", choices=("val", "train"), default="val",
                    help="the split to compare on (test is not offered: a rule chosen on it would be tuned on it)")
    pc.set_defaults(func=_compare_pools)
    g = sub.add_parser("keygen", help="make an Ed25519 signing key (private PEM file, public key printed)")
    g.add_argument("--out", required=True, help="private key file to create (never overwritten)")
    g.set_defaults(func=_keygen)
    s = sub.add_parser("sign", help="sign a bundle's manifest (after compile: any rewrite drops the signature)")
    s.add_argument("bundle")
    s.add_argument("--key", required=True, help="Ed25519 private key (PEM) made by keygen")
    s.set_defaults(func=_sign)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (BundleError, DatasetError, SignatureError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
