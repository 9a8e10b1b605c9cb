"""Train the differential cell model (issue 32) on cells of both sites; a long job.

``python -m converter.differential_train --data DIR --pbc DIR --weights H5 --work DIR``
cuts the cells (cached in ``--work``), trains the 11-output dual MobileNetV2 and saves it
with its history and a per-site, per-class validation report. The all-pbs-224 split is the
shipped bundle's (its manifest's keys), so a validation figure here is comparable with the
shipped model's; pbc-normal is split by image (no patient identifiers). Quantizing, fitting
the operating point and writing a bundle are the next steps (``build-cells``' path), not this
command's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.analysis.cells import CellParams
from edge.analysis.labels import LABELS
from edge.evaluation.dataset import load_dataset
from edge.model.bundle import default_bundle_path, load_bundle

from converter.cell_data import CellSet, extract
from converter.cell_train import CellTrainConfig
from converter.differential_data import (DIFF_LABELS, SHARE_PRESETS, draw_weights, extract_pbc, merge, pbc_files,
                                         pseudo_label)


def cell_params(partition: str | None = None) -> CellParams:
    """The shipped bundle's cell parameters, with touching cells cut apart by ``partition``
    when given: the crops a model is trained on must be cut the way the device will cut them."""
    bundle = load_bundle(default_bundle_path())
    if bundle.cells is None:
        raise ValueError(f"{bundle.root} is not a cell bundle: its cell parameters cut the training cells")
    return bundle.cells if partition is None else dataclasses.replace(bundle.cells, partition=partition)


def cell_sets(data: Path, pbc: Path, work: Path, log=print, partition: str | None = None
              ) -> dict[str, dict[str, CellSet]]:
    """{"allpbs"|"pbc": {"train"|"val"|"test": CellSet}}, cached as npz in ``work`` (one
    partition per folder); all-pbs labels are already the first four differential labels."""
    bundle = load_bundle(default_bundle_path())
    seg, params = bundle.segmentation, cell_params(partition)
    keys = bundle.manifest["split"]["keys"]
    dataset = load_dataset(data)
    files = pbc_files(pbc)
    out: dict[str, dict[str, CellSet]] = {"allpbs": {}, "pbc": {}}
    for split in ("train", "val", "test"):
        for site in ("allpbs", "pbc"):
            cache = work / f"{site}_{split}.npz"
            if cache.exists():
                out[site][split] = CellSet.load(cache)
                continue
            t = time.monotonic()
            if site == "allpbs":
                chosen = set(keys[split])
                cells = extract([s for s in dataset.samples if s.key in chosen], seg, params, log)
            else:
                cells = extract_pbc([f for f in files if f[2] == split], seg, params, log)
            cells.save(cache)
            out[site][split] = cells
            log(f"{site} {split}: {len(cells.field)} cells from {len(cells.keys)} images/fields, "
                f"{len(cells.refused)} refused ({time.monotonic() - t:.0f} s)")
    return out


def site_report(probs: np.ndarray, cells: CellSet) -> dict[str, Any]:
    """Per-class recall, confusion and blast calls of one site's cells."""
    truth, pred = cells.labels, probs.argmax(1)
    blast = np.isin(pred, [DIFF_LABELS.index(b) for b in ("early_pre_b", "pre_b", "pro_b")])
    truth_blast = np.isin(truth, [1, 2, 3])
    recall: dict[str, float] = {}
    confusion: dict[str, dict[str, int]] = {}
    report: dict[str, Any] = {"cells": int(len(truth)), "accuracy": float((pred == truth).mean()) if len(truth) else None,
                              "recall": recall, "confusion": confusion}
    for k, name in enumerate(DIFF_LABELS):
        sel = truth == k
        if sel.any():
            recall[name] = round(float((pred[sel] == k).mean()), 4)
            confusion[name] = {DIFF_LABELS[j]: int((pred[sel] == j).sum()) for j in range(len(DIFF_LABELS))
                                         if (pred[sel] == j).any()}
    merged = np.where(np.isin(pred, [1, 2, 3]), 1, pred)
    merged_truth = np.where(truth_blast, 1, truth)
    report["accuracy_blasts_merged"] = float((merged == merged_truth).mean()) if len(truth) else None
    report["non_blast_called_blast"] = round(float(blast[~truth_blast].mean()), 4) if (~truth_blast).any() else None
    report["blast_called_blast"] = round(float(blast[truth_blast].mean()), 4) if truth_blast.any() else None
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m converter.differential_train", description=__doc__)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--pbc", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--head-epochs", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--cells-per-epoch", type=int, default=8000)
    ap.add_argument("--average-last", type=int, default=3)
    ap.add_argument("--init", type=Path, help="start from this saved differential (.keras) instead of ImageNet")
    ap.add_argument("--pseudo-from", type=Path,
                    help="a saved differential whose confident non-lymphoid calls relabel all-pbs-224 training cells")
    ap.add_argument("--pseudo-threshold", type=float, default=0.7)
    ap.add_argument("--balanced", action="store_true",
                    help="every class equally often (the first build) instead of --shares")
    ap.add_argument("--shares", choices=sorted(SHARE_PRESETS), default="v2",
                    help="batch shares per group (converter.differential_data.SHARE_PRESETS)")
    ap.add_argument("--partition", choices=["watershed", "nearest_core"],
                    help="cut touching cells this way (edge.analysis.cells.PARTITIONS; default: the shipped "
                         "bundle's); recorded, and build-differential cuts the same way")
    args = ap.parse_args(argv)
    for path in (args.data, args.pbc, args.weights, *(p for p in (args.init, args.pseudo_from) if p)):
        if not path.exists():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    args.work.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(time.strftime("%H:%M:%S"), line, flush=True)

    import keras

    from converter.cell_model import build_cell_model
    from converter.cell_train import train_cells
    from edge.analysis.cells import CellCrops, model_inputs

    sets = cell_sets(args.data, args.pbc, args.work, log, args.partition)
    allpbs_train = sets["allpbs"]["train"]
    pseudo: dict[str, int] = {}
    if args.pseudo_from:
        earlier = keras.models.load_model(args.pseudo_from)
        earlier = keras.Model(earlier.inputs, earlier.outputs[0])
        probs = earlier.predict(model_inputs(CellCrops(allpbs_train.rgb, allpbs_train.own, allpbs_train.near)),
                                batch_size=64, verbose=0)
        allpbs_train, pseudo = pseudo_label(allpbs_train, probs, args.pseudo_threshold)
        log(f"pseudo-labels from {args.pseudo_from} at {args.pseudo_threshold}: {pseudo}")
    train = merge(allpbs_train, sets["pbc"]["train"])
    weights = None if args.balanced else draw_weights(allpbs_train, sets["pbc"]["train"], SHARE_PRESETS[args.shares])
    val = merge(sets["allpbs"]["val"], sets["pbc"]["val"])
    counts = np.bincount(train.labels, minlength=len(DIFF_LABELS))
    log("training cells per class: " + ", ".join(f"{n} {c}" for n, c in zip(DIFF_LABELS, counts)))
    cfg = CellTrainConfig(head_epochs=args.head_epochs, finetune_epochs=args.finetune_epochs,
                          cells_per_epoch=args.cells_per_epoch, average_last=args.average_last,
                          n_classes=len(DIFF_LABELS))
    model = (keras.models.load_model(args.init) if args.init
             else build_cell_model(args.weights, n_classes=len(DIFF_LABELS)))
    started = time.monotonic()
    history = train_cells(model, train, val, cfg, log, weights)
    history["pseudo_labels"] = pseudo
    history["shares"] = None if args.balanced else SHARE_PRESETS[args.shares]
    history["partition"] = cell_params(args.partition).partition
    history["init"] = str(args.init) if args.init else "imagenet"
    history["seconds"] = round(time.monotonic() - started)
    model.save(args.work / "differential.keras")
    classifier = keras.Model(model.inputs, model.outputs[0])
    reports = {}
    for site in ("allpbs", "pbc"):
        cells = sets[site]["val"]
        probs = classifier.predict(model_inputs(CellCrops(cells.rgb, cells.own, cells.near)), batch_size=64, verbose=0)
        reports[site] = site_report(probs, cells)
        log(f"val {site}: {json.dumps({k: v for k, v in reports[site].items() if k != 'confusion'})}")
    (args.work / "differential_training.json").write_text(json.dumps(
        {"config": dataclasses.asdict(cfg), "labels": list(DIFF_LABELS), "history": history,
         "val": reports, "four_labels": list(LABELS)}, indent=2))
    log(f"done in {history['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
