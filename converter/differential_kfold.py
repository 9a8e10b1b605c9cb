"""Out-of-fold field scores over every training block (issue 32, item 4); a long job, one fold a run.

``python -m converter.differential_kfold --fold I --folds K --data DIR --pbc DIR --weights H5 --work DIR``
trains the differential as ``converter.differential_train`` does (ImageNet start, the v3 shares,
the cells cut by nearest nucleus core) on every all-pbs-224 training block except fold I's, with
all of pbc-normal's training cells, and writes ``oof_fold{I}.npz``: each held-out training field's
pooled four-label probabilities (the device's pooling: cells read as "not a white cell" left
out, the arithmetic mean of the rest), its label, its block and how many white cells it rests on.

Why: the operating point (threshold, band, case rule) fitted on the 64 benign validation fields
of three patients did not hold on other patients; fitted on out-of-fold scores it rests on every
benign block the data has. Folds are whole patient-proxy blocks, dealt to the folds per class
so each fold holds benign and malignant blocks. The scores are the float model's on one view (not
yet the int8 device pipeline's): a first look at the spread over blocks, said wherever used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge.analysis.cells import four_class, pool_share
from edge.analysis.labels import NOT_A_WHITE_CELL
from edge.evaluation.dataset import Sample, load_dataset, number_blocks
from edge.model.bundle import default_bundle_path, load_bundle

from converter.cell_data import CellSet
from converter.differential_data import DIFF_LABELS


def fold_of_blocks(samples: list[Sample], block_size: int, folds: int, seed: int = 0) -> dict[str, int]:
    """Each sample's fold (key -> 0..folds-1): whole blocks, dealt per class in a shuffled order."""
    blocks = number_blocks(samples, block_size)
    by_label: dict[str, list[tuple[str, int]]] = {}
    for block in sorted(set(blocks)):
        by_label.setdefault(block[0], []).append(block)
    rng = np.random.default_rng(seed)
    fold: dict[tuple[str, int], int] = {}
    offset = 0
    for label in sorted(by_label):
        order = [by_label[label][i] for i in rng.permutation(len(by_label[label]))]
        for i, block in enumerate(order):
            fold[block] = (i + offset) % folds
        offset += len(order)  # the next class starts where this one ended: folds stay even in size
    return {s.key: fold[b] for s, b in zip(samples, blocks)}


def subset(cells: CellSet, keep_fields: np.ndarray) -> CellSet:
    """``cells`` of the fields where ``keep_fields`` (one bool a field) holds, re-indexed."""
    keep_cells = keep_fields[cells.field]
    new_index = np.cumsum(keep_fields) - 1
    return CellSet(cells.rgb[keep_cells], cells.own[keep_cells], cells.near[keep_cells],
                   new_index[cells.field[keep_cells]], [k for k, f in zip(cells.keys, keep_fields) if f],
                   cells.field_labels[keep_fields], cells.rbc_px[keep_fields], [],
                   None if cells.cell_labels is None else cells.cell_labels[keep_cells])


def field_scores(probs: np.ndarray, cells: CellSet) -> tuple[np.ndarray, np.ndarray]:
    """Per field: the pooled four-label probabilities as the device pools a differential's cells,
    and the white cells they rest on (0: no white cell, the row is NaN)."""
    labels = tuple(DIFF_LABELS)
    white = probs.argmax(1) != labels.index(NOT_A_WHITE_CELL)
    pooled = np.full((len(cells.keys), 4), np.nan)
    counts = np.zeros(len(cells.keys), int)
    for f in range(len(cells.keys)):
        sel = (cells.field == f) & white
        counts[f] = int(sel.sum())
        if counts[f]:
            pooled[f] = pool_share(four_class(probs[sel], labels))
    return pooled, counts


def report(work: Path, bundle_path: Path) -> dict:
    """The out-of-fold scores so far (``oof_fold*.npz`` in ``work``) read at ``bundle_path``'s
    operating point: per block, the share of its fields called right (benign: negative;
    malignant: positive), and the AUC of benign against malignant fields apart from any
    operating point. How the operating point fitted on validation holds on every training block."""
    from edge.analysis.labels import BENIGN, LABELS
    from edge.analysis.screening import screen
    from edge.model.signing import Trust

    bundle = load_bundle(bundle_path, Trust(allow_unsigned=True))
    files = sorted(work.glob("oof_fold*.npz"))
    if not files:
        raise ValueError(f"{work}: no oof_fold*.npz yet")
    from edge.evaluation.metrics import auc

    rows: dict[str, dict] = {}
    scores: list[tuple[bool, float]] = []
    for path in files:
        d = np.load(path)
        for label, pooled, cells, block in zip(d["labels"], d["pooled"], d["white_cells"], d["blocks"]):
            benign = LABELS[int(label)] == BENIGN
            row = rows.setdefault(str(block), {"label": LABELS[int(label)], "fields": 0, "right": 0})
            row["fields"] += 1
            if cells == 0 or np.isnan(pooled).any():
                continue
            scores.append((not benign, 1.0 - float(pooled[LABELS.index(BENIGN)])))
            call = screen(pooled, bundle.calibration, int(cells)).call
            row["right"] += call == ("negative" if benign else "positive")
    malignant = np.array([m for m, _ in scores], bool)
    score = np.array([v for _, v in scores])
    both = malignant.any() and not malignant.all()
    shares = {side: sorted(round(r["right"] / r["fields"], 3) for r in rows.values()
                           if (r["label"] == BENIGN) == (side == "benign")) for side in ("benign", "malignant")}
    return {"folds": [f.name for f in files], "operating_point_of": bundle.model_id,
            "auc": auc(score, malignant) if both else None,
            "fields": {"benign": int((~malignant).sum()), "malignant": int(malignant.sum())}, "right_per_block": shares,
            "note": "float model, one view a cell: the device reads int8 in eight views"}


#: The most white cells a negative call may be made to rest on when the count is fitted out of fold.
MAX_FIT_CELLS = 5


def oof_scores(work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Every out-of-fold field with a white cell: its pooled raw four-label probabilities, its
    label index, its block, its white cells, and the fold files read. Raises when a fold of the
    ones the files name is missing: an operating point fitted on part of the blocks is not the
    one item 4 asks for."""
    files = sorted(work.glob("oof_fold*.npz"))
    if not files:
        raise ValueError(f"{work}: no oof_fold*.npz yet")
    raws, truth, blocks, cells = [], [], [], []
    for path in files:
        d = np.load(path)
        keep = (d["white_cells"] > 0) & ~np.isnan(d["pooled"]).any(1)
        raws.append(d["pooled"][keep])
        truth.append(d["labels"][keep].astype(int))
        blocks.append(d["blocks"][keep])
        cells.append(d["white_cells"][keep])
    return (np.concatenate(raws), np.concatenate(truth), np.concatenate(blocks), np.concatenate(cells),
            [f.name for f in files])


def oof_field_records(work: Path, calibration) -> tuple[list[list[dict]], list[list[dict]], list[str]]:
    """The out-of-fold fields as the device stores them (``status``, ``call``, ``label``,
    ``white_cells``, ``blasts``: a cell is a blast by its argmax among the cells read as white
    cells), called at ``calibration``, grouped by block: (benign blocks, malignant blocks, the
    fold files read). Fold files written before the cells' probabilities were kept are left
    out, and the third item says which were read."""
    from edge.analysis.labels import BENIGN, LABELS, is_blast
    from edge.analysis.screening import screen

    files = sorted(work.glob("oof_fold*.npz"))
    blast_index = [i for i, label in enumerate(DIFF_LABELS) if is_blast(label)]
    not_white = list(DIFF_LABELS).index(NOT_A_WHITE_CELL)
    blocks: dict[tuple[bool, str], list[dict]] = {}
    read: list[str] = []
    for path in files:
        d = np.load(path)
        if "cell_probs" not in d.files:
            continue
        read.append(path.name)
        argmax = d["cell_probs"].astype(np.float32).argmax(1)
        for i, (label, pooled, white, block) in enumerate(zip(d["labels"], d["pooled"], d["white_cells"], d["blocks"])):
            benign = LABELS[int(label)] == BENIGN
            cells = argmax[d["cell_field"] == i]
            if white == 0 or np.isnan(pooled).any():
                record: dict = {"status": "rejected", "call": None, "label": None}
            else:
                shown = screen(pooled, calibration, int(white))
                record = {"status": "classified", "call": shown.call, "label": shown.label, "white_cells": int(white),
                          "blasts": int(np.isin(cells[cells != not_white], blast_index).sum())}
            blocks.setdefault((benign, str(block)), []).append(record)
    return ([v for (b, _), v in sorted(blocks.items()) if b], [v for (b, _), v in sorted(blocks.items()) if not b], read)


def fit_out_of_fold(work: Path, bundle, folds: int = 4):
    """The operating point of item 4: the threshold and the uncertain band fitted on the
    out-of-fold fields of every training block (the bootstrap resampling whole blocks, so the band
    spans how the threshold moves from one set of patients to another), at the bundle's own
    temperature and targets; the fewest cells a negative call rests on (``converter.cell_count``'s
    rule, on the same fields' negative calls by their white cells: clean fields, not the capture
    suite, which needs the device pipeline) and the case rule from the same fields' calls.
    Returns the calibration, its fit report and the case rule. The scores are the fold models' (float, one view): the
    bundle's validation split, which none of this saw, is the check that they carry over."""
    import dataclasses

    from converter.calibration import fit_calibration
    from edge.analysis.case import CaseRule
    from edge.analysis.labels import BENIGN, LABELS
    from edge.analysis.screening import screen

    raw, truth, blocks, cells, files = oof_scores(work)
    if len(files) != folds:
        raise ValueError(f"{work}: {len(files)} of {folds} folds written ({', '.join(files)}): run the rest first")
    recorded = bundle.manifest.get("calibration_fit", {}).get("int8", {}).get("targets", {})
    benign = truth == LABELS.index(BENIGN)
    fitted_on = (f"out-of-fold fields of every training block ({folds}-fold by block; the fold models' float "
                 "scores, one view a cell)")
    # the count rule and the thresholds together: a field resting on fewer than k white cells is
    # held back (uncertain) whatever its score, so the thresholds are fitted on the fields they
    # decide; k is the count that clears the most benign fields at the same sensitivity target
    # (a few-cell field's score is a cell or two's: the lowest malignant scores out of fold are)
    tried: list[dict] = []
    best = None
    for k in range(1, MAX_FIT_CELLS + 1):
        decided = cells >= k
        if (decided & ~benign).sum() < 50 or (decided & benign).sum() < 20:
            break
        fit_k = fit_calibration(raw[decided], truth[decided],
                                target_sensitivity=float(recorded.get("sensitivity", 0.995)),
                                target_specificity=float(recorded.get("specificity", 0.95)), band="bootstrap",
                                groups=blocks[decided], temperature=bundle.calibration.temperature, fitted_on=fitted_on)
        cal_k = dataclasses.replace(fit_k.calibration, min_cells_to_clear=k)
        calls_k = [screen(r, cal_k, int(c)).call for r, c in zip(raw, cells)]
        cleared = sum(c == "negative" for c, b in zip(calls_k, benign) if b) / max(int(benign.sum()), 1)
        missed = sum(c == "negative" for c, b in zip(calls_k, benign) if not b)
        tried.append({"min_cells": k, "threshold": cal_k.malignant_threshold, "band": [cal_k.uncertain_low,
                      cal_k.uncertain_high], "benign_called_negative": round(cleared, 4), "malignant_called_negative": missed})
        if best is None or cleared > best[0] + 1e-9:
            best = (cleared, cal_k, fit_k)
    if best is None:
        raise ValueError(f"{work}: too few out-of-fold fields to fit an operating point")
    _, calibration, fit = best
    fit.report["min_cells_to_clear"] = {"fitted_on": "the same out-of-fold fields, clean: the count clearing the most "
                                                     "benign fields at the sensitivity target", "tried": tried}
    calls = [screen(r, calibration, int(c)).call for r, c in zip(raw, cells)]
    rule = CaseRule.fit([c for c, b in zip(calls, benign) if b], [c for c, b in zip(calls, benign) if not b],
                        f"out-of-fold fields of every training block ({folds}-fold by block, float, one view)")
    benign_blocks, malignant_blocks, read = oof_field_records(work, calibration)
    if not read:
        fit.report["count_rule"] = "not fitted: no fold file keeps its cells' probabilities (train a fold again)"
    else:  # item 3: the case called from blasts among the white cells, fitted on the same patients
        from converter.case_count import case_figures_by_block, fit_count_rule

        part = "every fold" if len(read) == folds else f"the folds that keep their cells ({', '.join(read)}; the others predate it)"
        count = fit_count_rule(benign_blocks, malignant_blocks, rule,
                               f"out-of-fold cases drawn within each training block of {part} ({folds}-fold by "
                               "block, float, one view), the bootstrap over whole blocks")
        rule = dataclasses.replace(rule, count=count)
        count.fit["cases_in_sample"] = [case_figures_by_block(benign_blocks, malignant_blocks, rule, size)
                                        for size in (5, 10)]
        fit.report["count_rule"] = f"fitted on {part}"
    return calibration, fit.report, rule


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["report"]:
        rp = argparse.ArgumentParser(prog="python -m converter.differential_kfold report")
        rp.add_argument("--work", type=Path, required=True)
        rp.add_argument("--bundle", type=Path, required=True, help="whose operating point to read the scores at")
        a = rp.parse_args(argv[1:])
        try:
            print(json.dumps(report(a.work, a.bundle), indent=2))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    ap = argparse.ArgumentParser(prog="python -m converter.differential_kfold", description=__doc__)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--pbc", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="the cell caches (cut by nearest_core) and the outputs")
    ap.add_argument("--head-epochs", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--cells-per-epoch", type=int, default=10000)
    args = ap.parse_args(argv)
    if not 0 <= args.fold < args.folds:
        print(f"error: --fold {args.fold} is not one of 0..{args.folds - 1}", file=sys.stderr)
        return 2
    for path in (args.data, args.pbc, args.weights):
        if not path.exists():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2

    def log(line: str) -> None:
        print(time.strftime("%H:%M:%S"), line, flush=True)

    import keras

    from converter.cell_model import build_cell_model
    from converter.cell_train import CellTrainConfig, train_cells
    from converter.differential_data import SHARES_V3, draw_weights, merge
    from converter.differential_train import cell_sets
    from edge.analysis.cells import CellCrops, model_inputs

    bundle = load_bundle(default_bundle_path())
    keys = set(bundle.manifest["split"]["keys"]["train"])
    samples = [s for s in load_dataset(args.data).samples if s.key in keys]
    block_size = int(bundle.manifest["split"].get("block_size", 25))
    folds = fold_of_blocks(samples, block_size, args.folds)
    block_of = {s.key: b for s, b in zip(samples, number_blocks(samples, block_size))}
    sets = cell_sets(args.data, args.pbc, args.work, log, "nearest_core")
    train_all = sets["allpbs"]["train"]
    held = np.array([folds.get(k, -1) == args.fold for k in train_all.keys])
    train, oof = subset(train_all, ~held), subset(train_all, held)
    log(f"fold {args.fold} of {args.folds}: {int(held.sum())} training fields held out "
        f"({len(oof.field)} cells), {len(train.keys)} fields trained on")
    merged = merge(train, sets["pbc"]["train"])
    cfg = CellTrainConfig(head_epochs=args.head_epochs, finetune_epochs=args.finetune_epochs,
                          cells_per_epoch=args.cells_per_epoch, average_last=3, n_classes=len(DIFF_LABELS))
    model = build_cell_model(args.weights, n_classes=len(DIFF_LABELS))
    started = time.monotonic()
    train_cells(model, merged, merge(sets["allpbs"]["val"], sets["pbc"]["val"]), cfg, log,
                draw_weights(train, sets["pbc"]["train"], SHARES_V3))
    classifier = keras.Model(model.inputs, model.outputs[0])
    classifier.save(args.work / f"fold{args.fold}.keras")  # so the fold can be read again (int8, eight views)
    probs = classifier.predict(model_inputs(CellCrops(oof.rgb, oof.own, oof.near)), batch_size=64, verbose=0)
    pooled, counts = field_scores(probs, oof)
    out = args.work / f"oof_fold{args.fold}.npz"
    # the cells' own probabilities too (float16 is plenty for a share): a case rule on the blast
    # percentage is fitted from them, and a killed later step does not cost the fold's training again
    np.savez_compressed(out, keys=np.array(oof.keys), labels=oof.field_labels, pooled=pooled, white_cells=counts,
                        blocks=np.array([json.dumps(list(block_of[k])) for k in oof.keys]),
                        cell_probs=probs.astype(np.float16), cell_field=oof.field)
    log(f"wrote {out} ({len(oof.keys)} fields) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
