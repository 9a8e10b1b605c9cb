"""``blastscope-edge``: run the daemon, classify fields, evaluate a bundle, benchmark the per-field path."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge.model.bundle import MANIFEST, BundleError, load_bundle
from edge.device.capture import CameraError
from edge.device.config import ConfigError
from edge.evaluation.dataset import DatasetError, load_dataset
from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import DISPLAY_NAMES
from edge.analysis.result import DISCLAIMER
from edge.model.runtime import RuntimeUnavailable
from edge.model.signing import key_id


#: The installed device's configuration, used by every command when it exists.
SYSTEM_CONFIG = Path("/etc/blastscope/config.toml")


def _config_path(given: Path | None) -> Path | None:
    if given is not None:
        return given
    if os.environ.get("BLASTSCOPE_CONFIG"):
        return Path(os.environ["BLASTSCOPE_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def _pipeline(args: argparse.Namespace):
    """The device's pipeline for ``classify``, ``evaluate``, ``bench`` and ``robustness``:
    ``--bundle``, else what the daemon would load (the config's bundle, else the model
    installed with ``model install``, the state directory's ``current``, else the shipped
    one), verified with the config's trusted keys, and gated with the config's ``[quality]``
    overrides as the daemon gates. ``--allow-unsigned`` measures a development bundle the
    converter has not signed yet, and says so."""
    import dataclasses

    from edge.device.config import load_config
    from edge.pipeline import Pipeline

    cfg = load_config(_config_path(args.config), overrides={"store.state_dir": args.state_dir})
    path = args.bundle if args.bundle is not None else cfg.bundle_path
    if not (path / MANIFEST).exists():
        raise BundleError(f"no model bundle found (looked for {path / MANIFEST}); pass --bundle DIR, or install "
                          "one with: blastscope-edge model install DIR")
    trust = dataclasses.replace(cfg.trust, allow_unsigned=True) if args.allow_unsigned else cfg.trust
    bundle = load_bundle(path, trust)
    if bundle.signer is None:
        print(f"warning: {path}: unsigned bundle, measured on request (--allow-unsigned); a device will not run it "
              "until it is signed", file=sys.stderr)
    threads = args.threads if args.threads is not None else cfg.inference.threads  # a flag given wins, else the config
    pipeline = Pipeline.on_cpu(bundle, threads=threads, quality=cfg.quality)
    views = args.views if getattr(args, "views", None) is not None else cfg.inference.views
    reference = None
    if getattr(args, "site_reference", None) is not None:
        from edge.model.site_reference import SiteReference

        reference = SiteReference.load(args.site_reference)
    return Pipeline(bundle, pipeline.backends, cfg.quality, reference, views=views)


def _site_reference(args: argparse.Namespace) -> int:
    """Fit a site reference on a folder of known-negative slides, one sub-folder per slide."""
    from edge.analysis.imagefile import IMAGE_SUFFIXES, read_rgb
    from edge.model.site_reference import SlideCells, fit_reference

    data = Path(args.data)
    if not data.is_dir():
        raise ValueError(f"{data}: not a folder (one sub-folder of images per known-negative slide)")
    pipeline = _pipeline(args)
    slides = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        rows, embeddings, refused = [], [], 0
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            measured = pipeline.measure_cells(read_rgb(path))
            if measured is None:
                refused += 1
                continue
            rows.append(measured[0])
            embeddings.append(measured[1])
        print(f"{folder.name}: {len(rows)} fields, {sum(len(r) for r in rows)} cells"
              + (f", {refused} refused before their cells were read" if refused else ""))
        slides.append(SlideCells(folder.name, rows, embeddings))
    reference = fit_reference(slides, pipeline.bundle.model_id)
    reference.save(Path(args.out))
    print(f"site reference for model {reference.model_id}: {len(reference.slides)} slides, {reference.fields} fields, "
          f"{reference.cells} cells; appearance limit {reference.appearance.limit:.2f}, embedding limit "
          f"{reference.embedding.limit:.2f} (leave one slide out); written to {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from edge.daemon import serve

    overrides = {"server.host": args.host, "server.port": args.port, "camera.source": args.source,
                 "inference.backend": args.backend, "store.state_dir": args.state_dir,
                 "inference.bundle": str(args.bundle) if args.bundle else None}
    return serve(_config_path(args.config), overrides, args.demo)


def _camera(args: argparse.Namespace) -> int:
    """Lock exposure and white balance from a blank area of a slide (the service stopped)."""
    from edge.device.camera_calibration import calibrate, write_settings
    from edge.device.capture import Picamera2Source
    from edge.device.config import load_config

    path = _config_path(args.config)
    cfg = load_config(path)
    if cfg.camera.source != "picamera2":
        print(f"error: camera.source is {cfg.camera.source}: calibration sets the Pi camera's exposure and white "
              "balance (picamera2)", file=sys.stderr)
        return 2
    try:
        result = calibrate(lambda: Picamera2Source(cfg.camera.width, cfg.camera.height, cfg.camera.capture_timeout_seconds))
    except CameraError as exc:
        busy = "busy" in str(exc).lower()
        print(f"error: {exc}" + ("; the service holds the camera: sudo systemctl stop blastscope, calibrate, then "
                                 "start it again" if busy else ""), file=sys.stderr)
        return 2
    r0, g0, b0 = result.before
    r1, g1, b1 = result.after
    print(f"blank area under automatic settings: R {r0:.0f} G {g0:.0f} B {b0:.0f}; locked: R {r1:.0f} G {g1:.0f} B {b1:.0f}")
    settings = result.settings()
    if args.write:
        if path is None:
            print("error: --write needs the config file (--config PATH)", file=sys.stderr)
            return 2
        write_settings(path, settings)
        print(f"written to [camera] in {path}; restart the service to use them: sudo systemctl restart blastscope")
    else:
        print("[camera]\n" + "\n".join(f"{k} = {v}" for k, v in settings.items()))
        print("add these to the config's [camera] section, or run again with --write")
    return 0


def _record(args: argparse.Namespace) -> int:
    """``record accept-new``: an admin accepts the new, empty record in place of a damaged one
    (set aside, kept), so the device leaves its read-only state; audited. ``record rollback``
    (the service stopped, for the older release): back to the record as it was before the
    latest migration, the migrated record set aside."""
    import getpass

    from edge.device.config import load_config
    from edge.record.store import DATABASE, Store

    cfg = load_config(_config_path(args.config), overrides={"store.state_dir": args.state_dir})
    if args.action == "rollback":
        from edge.record.backup import rollback_record

        restored, aside = rollback_record(Path(cfg.state_dir) / DATABASE)
        print(f"the record is back to {restored.name} (as it was before its migration); the record it replaced is "
              f"kept as {aside.name} (the fields read since are there); start the older release now")
        return 0
    store = Store(cfg.state_dir, cfg.store)
    try:
        if store.read_only is None:
            print(f"the record in {cfg.state_dir} is not damaged: nothing to accept")
            return 0
        accepted = store.accept_new_record(f"{getpass.getuser()} (command line)")
    finally:
        store.close()
    print(f"accepted the new record; the damaged one stays set aside: {', '.join(accepted)}. Restart the daemon.")
    return 0


def _district_usb(args: argparse.Namespace) -> int:
    """``district usb-export DIR``: the cases waiting for the district onto a USB stick;
    ``district usb-ack DIR``: the district's acknowledgement from it, its cases marked sent."""
    import getpass

    from edge.analysis.case import case_call, final_call
    from edge.device.config import load_config
    from edge.device.district_usb import apply_ack, export_cases
    from edge.record.store import Store

    cfg = load_config(_config_path(args.config), overrides={"store.state_dir": args.state_dir})
    if not cfg.district.password_file:
        print("error: [district] password_file is not set: the stick's manifest is authenticated with the device's "
              "district password", file=sys.stderr)
        return 2
    secret = Path(cfg.district.password_file).read_text().strip()
    store = Store(cfg.state_dir, cfg.store)
    client = f"{getpass.getuser()} (command line)"
    try:
        if args.action == "usb-ack":
            marked = apply_ack(store, cfg.device_name, Path(args.folder), secret, client)
            print(f"the district acknowledged {len(marked)} case(s): marked sent")
            return 0
        bundle = load_bundle(cfg.bundle_path, cfg.trust)
        rule = bundle.case_rule

        def final(case_id: int) -> str | None:
            case = store.get_case(case_id) or {}
            model = case_call(case.get("fields", []), rule, cfg.cases.min_fields).call if rule else case.get("call")
            return final_call(case.get("signed") or case.get("review"), model)

        payload = export_cases(store, cfg.device_name, bundle.model_id, final, Path(args.folder), secret, client)
        print(f"{len(payload['cases'])} case(s), {len(payload['files'])} files written to "
              f"{Path(args.folder) / 'BLASTSCOPE' / cfg.device_name}; they stay waiting until the district's "
              f"acknowledgement comes back (blastscope-edge district usb-ack {args.folder})")
        return 0
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()


def _audit(args: argparse.Namespace) -> int:
    """Walk the audit log's hash chain; exit 1 when it was altered."""
    from edge.device.config import load_config
    from edge.record.store import Store

    cfg = load_config(_config_path(args.config), overrides={"store.state_dir": args.state_dir})
    store = Store(cfg.state_dir, cfg.store)
    try:
        check = store.audit_check(max_age_s=0)
    finally:
        store.close()
    if check.intact:
        print(f"audit log intact: {check.rows} rows, last hash {check.head}")
        return 0
    print(f"audit log ALTERED: {check.problem}; the {check.rows} rows before it are intact (last good hash "
          f"{check.head}). Keep {cfg.state_dir / 'results.db'} as it is for an investigation.", file=sys.stderr)
    return 1


def _credentials(args: argparse.Namespace) -> int:
    """The PIN and token the daemon created at its first start, for whoever may read the file."""
    from edge.device.config import load_config
    from edge.web.auth import CREDENTIALS

    cfg = load_config(_config_path(args.config), overrides={"store.state_dir": args.state_dir})
    path = cfg.state_dir / CREDENTIALS
    try:
        stored = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    except PermissionError:
        print(f"error: {path} is readable by root and the service user only: run with sudo", file=sys.stderr)
        return 2
    except FileNotFoundError:
        print(f"error: {path}: no credentials yet; they are created at the daemon's first start", file=sys.stderr)
        return 2
    print(f"PIN {stored.get('pin', '(set in the config)')}\nAPI token {stored.get('token', '(set in the config)')}")
    print("a PIN or token set in the config or the environment (server.pin, server.token) takes precedence")
    return 0


def _users(args: argparse.Namespace) -> int:
    """List, add or change the device's users (``edge.web.users``). A PIN is read from the
    terminal, or from standard input with --pin-stdin, never from the command line (which
    every other user of the Pi can see in the process list)."""
    import getpass

    from edge.device.config import load_config
    from edge.record.store import Store
    from edge.web.users import User, UserError, Users

    cfg = load_config(_config_path(args.config), overrides={"store.state_dir": args.state_dir})
    users = Users(cfg.state_dir)
    try:
        if args.action == "list":
            for user in users.all():
                print(f"{user.name}\t{user.role}\t{'active' if user.active else 'inactive'}")
            return 0
        if not args.name:
            print(f"error: users {args.action} needs a NAME", file=sys.stderr)
            return 2
        pin: str | None = None
        token: str | None = None
        before: User | None = None
        if args.action == "add" or args.new_pin:
            pin = sys.stdin.readline().strip() if args.pin_stdin else getpass.getpass(f"PIN for {args.name} (6-12 digits): ")
        try:
            if args.action == "add":
                token = users.add(args.name, args.role or "technician", pin or "")
            else:
                before = users.get(args.name)
                token = users.change(args.name, role=args.role, pin=pin,
                                     active=None if args.active is None else args.active == "yes", new_token=args.new_token)
        except UserError as exc:
            print(f"error: {users_path(cfg)}: {exc}", file=sys.stderr)
            return 2
        changed = users.get(args.name)
        assert changed is not None
        store = Store(cfg.state_dir, cfg.store)
        try:
            store.audit(f"cli:{os.environ.get('SUDO_USER') or os.environ.get('USER') or 'unknown'}", f"user.{args.action}",
                        None if args.action == "add" else {"role": before.role, "active": before.active} if before else None,
                        {"name": changed.name, "role": changed.role, "active": changed.active, "pin_changed": pin is not None})
        finally:
            store.close()
        print(f"{changed.name}: {changed.role}, {'active' if changed.active else 'inactive'}")
        if token:
            print(f"API token {token}  (shown once: keep it for scripts)")
        return 0
    finally:
        users.close()


def users_path(cfg) -> Path:
    from edge.web.users import DATABASE

    return cfg.state_dir / DATABASE


def _audit_model(cfg, action: str, before: str | None, bundle) -> None:
    """A model change goes in the device's audit log with the clinic's other records."""
    from edge.record.store import Store

    store = Store(cfg.state_dir, cfg.store)
    try:
        store.audit(f"cli:{os.environ.get('SUDO_USER') or os.environ.get('USER') or 'unknown'}", action,
                    {"model_id": before}, {"model_id": bundle.model_id, "release": bundle.release})
    finally:
        store.close()


def _model(args: argparse.Namespace) -> int:
    from edge.device.config import load_config
    from edge.device.modelstore import install_bundle, rollback

    cfg = load_config(_config_path(args.config), overrides={"store.state_dir": args.state_dir})
    if args.action == "install":
        if args.bundle_dir is None:
            print("error: model install needs the bundle folder", file=sys.stderr)
            return 2
        bundle, previous, checked = install_bundle(args.bundle_dir, cfg.state_dir, cfg.trust,
                                                   allow_downgrade=args.allow_downgrade)
        _audit_model(cfg, "model downgrade" if any(c.startswith("downgrade") for c in checked) else "model install",
                     previous, bundle)
        for line in checked:
            print(line if line.startswith("downgrade") else f"reference outputs {line}")
        print(f"installed model {bundle.model_id}, signed by key {key_id(bundle.signer) if bundle.signer else 'none (unsigned, allowed by the config)'} "
              f"(previous: {previous or 'none'}) in {cfg.state_dir / 'models'}")
    else:
        bundle, replaced = rollback(cfg.state_dir, cfg.trust)
        _audit_model(cfg, "model rollback", replaced, bundle)
        print(f"rolled back to model {bundle.model_id} (replaced {replaced})")
    print("restart the service to load it: sudo systemctl restart blastscope")
    return 0


def _describe(path: str, result: dict) -> str:
    if not result["classified"]:
        return f"{path}: not classified: {'; '.join(result['reasons'])}"
    label = DISPLAY_NAMES.get(result["label"], result["label"])
    probs = ", ".join(f"{k} {v:.2f}" for k, v in result["probabilities"].items())
    why = f": {result['call_reason']}" if result.get("call_reason") else ""
    return (f"{path}: {label}; screening {result['call']}{why} (malignant probability "
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


def _evaluate_pbc(args: argparse.Namespace, pipeline) -> int:
    """``evaluate`` on pbc-normal: the differential per cell (edge/evaluation/pbc_evaluate.py)."""
    from edge.evaluation.pbc_evaluate import TARGETS, evaluate_cells

    try:
        report = evaluate_cells(pipeline, args.data, args.split, log=lambda m: print(m, file=sys.stderr))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"pbc-normal {args.split} split (by image: the dataset has no patient identifiers), {report.n} cells "
          f"({report.no_cell} images with no cell found at the centre), backend {report.backend}, "
          f"model {report.model_id}")
    print(f"accuracy {100 * report.accuracy:.1f}% (target {100 * TARGETS['accuracy']:.0f}%)  "
          f"normal cells called blast {100 * report.normal_called_blast:.2f}% "
          f"(target <= {100 * TARGETS['normal_called_blast']:.0f}%)")
    print("recall: " + ", ".join(f"{k} {100 * report.recall(k):.1f}%" for k in report.labels)
          + f" (target >= {100 * TARGETS['recall']:.0f}% each)")
    print(report.table())
    return 0


def _compare_views(args: argparse.Namespace, pipeline, samples: list) -> int:
    """``evaluate --compare-views``: every field read in every view and adaptively (issue 36)."""
    from edge.evaluation.views_compare import compare_views

    report = compare_views(pipeline, samples).to_dict()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    views, calls = report["views_read_per_field"], report["invocations_per_field"]
    print(f"{report['fields']} fields ({args.split} split), model {pipeline.bundle.model_id}: read in every view "
          f"and adaptively (edge/model/views.py)")
    print(f"calls changed: {len(report['calls_changed'])}; cells relabelled {report['cells_relabelled']} of "
          f"{report['cells']}; fields whose blast count changed {report['fields_with_blast_count_changed']}; "
          f"largest change of a field's malignant probability {report['max_malignant_probability_shift']:.4f}")
    for c in report["calls_changed"]:
        print(f"  {c['key']} ({c['label']}): {c['all_views']} in every view, {c['adaptive']} adaptively")
    if views["all"] is not None:
        print(f"views read per field p50/p95: every view {views['all']['p50']:g}/{views['all']['p95']:g}, "
              f"adaptive {views['adaptive']['p50']:g}/{views['adaptive']['p95']:g}")
    if (benign := report["views_read_per_benign_field"])["all"] is not None:
        print(f"views read per benign field p50/p95 (a positive field is read in every view): every view "
              f"{benign['all']['p50']:g}/{benign['all']['p95']:g}, adaptive {benign['adaptive']['p50']:g}/"
              f"{benign['adaptive']['p95']:g}")
    print(f"CPU invocations per field p50/p95: every view {calls['all']['p50']:g}/{calls['all']['p95']:g}, "
          f"adaptive {calls['adaptive']['p50']:g}/{calls['adaptive']['p95']:g}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: all-pbs-224 fields (and cases) through the device pipeline, or
    pbc-normal's cells through the differential, told apart by the folder's layout."""
    from edge.evaluation.evaluate import evaluate, samples_for_split
    from edge.evaluation.pbc_evaluate import is_pbc_normal

    pipeline = _pipeline(args)
    if is_pbc_normal(args.data):
        return _evaluate_pbc(args, pipeline)
    dataset = load_dataset(args.data)
    for path, reason in dataset.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    samples = samples_for_split(pipeline.bundle, dataset, args.split)
    if args.case_size and min(args.case_size) < 1:
        print("error: --case-size must be at least 1", file=sys.stderr)
        return 2
    if args.compare_views:
        return _compare_views(args, pipeline, samples)
    report = evaluate(pipeline, samples, args.case_size)
    report["split"] = args.split
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['n']} fields ({args.split} split), backend {report['backend']}, model {report['model_id']}; "
          f"scoring the label the device shows")
    print(f"accuracy {report['accuracy']:.4f}  malignant sensitivity {report['malignant_sensitivity']:.4f}  "
          f"benign specificity {report['benign_specificity']:.4f}  uncertain {report['uncertain']}  "
          f"{report['ms_per_field']:.1f} ms/field")
    if (rank := report["ranking"]).get("auc") is not None:
        print(f"ranking of benign against malignant fields (no operating point): AUC {rank['auc']:.4f}; benign fields "
              "below the threshold keeping " + ", ".join(f"{float(k):.1%} of malignant: {v:.1%}"
                                                         for k, v in rank["benign_cleared_at_sensitivity"].items()))
    for side, sp in report["blocks"]["spread"].items():
        if sp:
            what = "called negative" if side == "benign" else "called positive"
            print(f"{side} fields {what}, per patient-proxy block: lowest {sp['lowest']:.3f}, median {sp['median']:.3f}, "
                  f"highest {sp['highest']:.3f} over {sp['blocks']} blocks")
    cases = report.get("cases")
    for c in ([cases] if isinstance(cases, dict) else cases or []):
        sens = "n/a" if c["sensitivity"] is None else f"{c['sensitivity']:.3f} ({c['sensitivity_ci95'][0]:.3f}-{c['sensitivity_ci95'][1]:.3f})"
        spec = "n/a" if c["specificity"] is None else f"{c['specificity']:.3f} ({c['specificity_ci95'][0]:.3f}-{c['specificity_ci95'][1]:.3f})"
        print(f"cases of {c['size']} fields: {c['n_malignant']} malignant, {c['n_benign']} benign; sensitivity {sens}, "
              f"specificity {spec}, uncertain or pending {c['uncertain']}")
    return 0


def _survey(args: argparse.Namespace) -> int:
    """Quality figures over a folder of fields: how to set the gate for a camera."""
    import cv2
    import numpy as np

    from edge.analysis.imagefile import IMAGE_SUFFIXES
    from edge.analysis.preprocess import fit_to_input
    from edge.analysis.quality import GateLimits, measure_quality

    paths = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:: args.every]
    if not paths:
        print(f"error: {args.folder}: no images found", file=sys.stderr)
        return 2
    variants: dict[str, tuple[float, float]] = {"as is": (0.0, 0.0)}
    if args.blur:
        variants[f"blurred sigma {args.blur:g}"] = (args.blur, 0.0)
    if args.noise:
        variants[f"noise sigma {args.noise:g}"] = (0.0, args.noise)
    rng = np.random.default_rng(0)
    report: dict[str, dict[str, list[float]]] = {}
    for name, (sigma, noise) in variants.items():
        figures: dict[str, list[float]] = {"focus": [], "clipped_fraction": [], "brightness": [], "noise": [],
                                           "border": []}
        for path in paths:
            field = fit_to_input(read_rgb(path), 224)
            if sigma:
                field = cv2.GaussianBlur(field, (0, 0), sigma)
            if noise:
                field = np.clip(field + rng.normal(0, noise, field.shape), 0, 255).astype(np.uint8)
            q = measure_quality(field, GateLimits())
            for key in figures:
                figures[key].append(getattr(q, key))
        report[name] = {k: [round(float(np.percentile(v, p)), 3) for p in (0, 5, 50, 95, 100)] for k, v in figures.items()}
    if args.json:
        print(json.dumps({"fields": len(paths), "percentiles": [0, 5, 50, 95, 100], "figures": report}, indent=2))
        return 0
    print(f"{len(paths)} fields from {args.folder}; percentiles 0/5/50/95/100 at 224x224")
    for name, figures in report.items():
        for key, values in figures.items():
            print(f"  {name:<18} {key:<17} " + " / ".join(f"{v:g}" for v in values))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from edge.evaluation.bench import run_bench

    pipeline = _pipeline(args)
    report = run_bench(pipeline, pipeline.bundle, repeats=args.repeats)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['input']}, backend {report['backend']}")
    stages = ", ".join(f"{k} {v['p50']}/{v['p95']}" for k, v in report["stages_ms"].items())
    print(f"stages p50/p95 ms: {stages}")
    e2e = report["end_to_end_ms"]
    print(f"end to end (including storing): p50 {e2e['p50']} ms, p95 {e2e['p95']} ms, {report['fields_per_s']} fields/s, "
          f"{report['rejected']} rejected")
    print(f"segmentation 224x224 on one core: p50 {report['segmentation_224_ms']['p50']} ms "
          f"(iterative cv2.kmeans reference p50 {report['cv2_kmeans_reference_224_ms']['p50']} ms)")
    if "cells_per_field" in report:
        print(f"cells per field p50 {report['cells_per_field']['p50']} (p95 {report['cells_per_field']['p95']}); "
              f"inference per cell p50 {report['per_cell_inference_ms']['p50']} ms")
    print(f"model invocations per field p50 {report['invocations_per_field']['p50']:g} "
          f"(p95 {report['invocations_per_field']['p95']:g}); CPU time per field p50 {report['cpu_ms_per_field']['p50']} ms "
          f"(every thread of the process)")
    if (every := report.get("every_view")) is not None:
        print(f"every view read (as before adaptive views, same run, {every['repeats']} repeats): invocations per field p50 "
              f"{every['invocations_per_field']['p50']:g}, CPU time per field p50 {every['cpu_ms_per_field']['p50']} ms; "
              f"views read per field p50 {every['views_read_per_field']['p50']:g} against "
              f"{(every['views_read_adaptive'] or {}).get('p50', 'n/a')} adaptively")
    print(f"mean per field: inference {report['inference_mean_ms']} ms, everything else {report['other_mean_ms']} ms "
          f"({report['other_mean_ms'] / max(report['inference_mean_ms'], 1e-9):.2f}x inference)")
    print(f"peak RSS {report['peak_rss_mb']} MB")
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from edge.evaluation.evaluate import samples_for_split
    from edge.evaluation.robustness import run, table

    pipeline = _pipeline(args)
    samples = samples_for_split(pipeline.bundle, load_dataset(args.data), args.split)[:: args.every]
    report = run(pipeline, samples, args.condition, args.seed)
    report["split"], report["every"] = args.split, args.every
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['n_fields']} fields ({args.split} split, every {args.every}), model {report['model_id']}, "
              f"seed {args.seed}; scoring the label the device shows")
        print(table(report))
    return 0


def _shortcuts(args: argparse.Namespace) -> int:
    from edge.evaluation.evaluate import samples_for_split
    from edge.evaluation.shortcuts import run, table

    pipeline = _pipeline(args)
    dataset = load_dataset(args.data)
    test = samples_for_split(pipeline.bundle, dataset, args.split)[:: args.every]
    train = samples_for_split(pipeline.bundle, dataset, "train")[:: args.every]
    report = run(pipeline, test, train, args.seed, log=lambda m: print(m, file=sys.stderr))
    report["split"], report["every"] = args.split, args.every
    if args.pbc is not None:
        from edge.evaluation import site_check

        if not (args.pbc / "images").is_dir():
            print(f"error: {args.pbc}: not pbc-normal (no images/ folder)", file=sys.stderr)
            return 2
        benign = [s for s in test if s.label == "benign"]
        report["site_check"] = site_check.run(pipeline, benign, args.pbc, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['n']} fields ({args.split} split, every {args.every}), model {report['model_id']}, seed "
              f"{args.seed}; scoring the label the device shows")
        print(table(report))
        if "site_check" in report:
            c = report["site_check"]
            print(f"site check ({c['cells_per_site']} benign lymphoid cells a site, all-pbs-224 against pbc-normal, "
                  f"split by image): linear probe AUC on the embedding {c['embedding_auc']:.3f} (target <= "
                  f"{c['target_auc']}: {'met' if c['passes'] else 'NOT met'}), on the raw grey crops "
                  f"{c['raw_crop_auc']:.3f}")
    return 0


def parser() -> argparse.ArgumentParser:
    import edge

    p = argparse.ArgumentParser(prog="blastscope-edge", description=__doc__)
    p.add_argument("--version", action="version", version=f"blastscope-edge {edge.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bundle", type=Path, help="model bundle folder (default: the config's bundle, else the "
                        "installed model, else the shipped models/default)")
    common.add_argument("--config", type=Path, help=f"TOML config file (default: $BLASTSCOPE_CONFIG, else {SYSTEM_CONFIG} "
                        "when it exists)")
    common.add_argument("--state-dir", help="state directory holding the installed model")
    common.add_argument("--views", choices=["adaptive", "all"],
                        help="how a cell's orientations are read (default: the config's inference.views, adaptive): "
                             "'all' reads every cell in every view, as the calibration was fitted")
    common.add_argument("--threads", type=int, help="CPU inference threads (default: the config's inference.threads)")
    common.add_argument("--allow-unsigned", action="store_true",
                        help="measure a bundle no trusted key has signed yet (a converter output under test)")
    common.add_argument("--site-reference", type=Path,
                        help="a site reference (site-reference fit): fields like this clinic's normal slides are read")
    sub = p.add_subparsers(dest="command", required=True)
    sr = sub.add_parser("site-reference", parents=[common], help="'fit': what a clinic's normal cells look like, from "
                        "its known-negative slides (one sub-folder of images per slide), so its stain is not refused")
    sr.add_argument("action", choices=["fit"])
    sr.add_argument("--data", required=True, help="folder with one sub-folder of field images per known-negative slide")
    sr.add_argument("--out", required=True, help="the reference file to write (JSON)")
    sr.set_defaults(func=_site_reference)
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
    ca = sub.add_parser("camera", help="camera set-up: 'calibrate' locks exposure and white balance from a blank "
                        "area of a slide (stop the service first)")
    ca.add_argument("action", choices=["calibrate"])
    ca.add_argument("--config", type=Path)
    ca.add_argument("--write", action="store_true", help="write the settings into the config's [camera] section")
    ca.set_defaults(func=_camera)
    au = sub.add_parser("audit", help="'verify' walks the audit log's hash chain: a row changed or removed is found")
    au.add_argument("action", choices=["verify"])
    au.add_argument("--config", type=Path)
    au.add_argument("--state-dir")
    au.set_defaults(func=_audit)
    du = sub.add_parser("district", help="no link: 'usb-export DIR' writes the cases waiting for the district to a USB "
                        "stick (DICOMDIR and an authenticated manifest); 'usb-ack DIR' reads the district's "
                        "acknowledgement back and marks those cases sent")
    du.add_argument("action", choices=["usb-export", "usb-ack"])
    du.add_argument("folder", help="the stick's mount point")
    du.add_argument("--config", type=Path)
    du.add_argument("--state-dir")
    du.set_defaults(func=_district_usb)
    rc = sub.add_parser("record", help="'accept-new': take the new, empty record in place of a damaged one "
                        "(set aside and kept), leaving the read-only state; 'rollback' (service stopped): back to the "
                        "record as it was before the latest migration, for the older release")
    rc.add_argument("action", choices=["accept-new", "rollback"])
    rc.add_argument("--config", type=Path)
    rc.add_argument("--state-dir")
    rc.set_defaults(func=_record)
    cr = sub.add_parser("credentials", help="show the PIN and API token created at the first start (root only)")
    cr.add_argument("--config", type=Path)
    cr.add_argument("--state-dir")
    cr.set_defaults(func=_credentials)
    us = sub.add_parser("users", help="list, add or change the people who log in (name, role, own PIN and token)")
    us.add_argument("action", choices=["list", "add", "set"])
    us.add_argument("name", nargs="?")
    us.add_argument("--role", choices=["technician", "reviewer", "admin"])
    us.add_argument("--new-pin", action="store_true", help="set: ask for a new PIN")
    us.add_argument("--new-token", action="store_true", help="set: issue a new API token (the old one stops working)")
    us.add_argument("--active", choices=["yes", "no"], help="set: whether the user may log in")
    us.add_argument("--pin-stdin", action="store_true", help="read the PIN from standard input")
    us.add_argument("--config", type=Path)
    us.add_argument("--state-dir")
    us.set_defaults(func=_users)
    m = sub.add_parser("model", help="install a model bundle (verified, atomic, previous kept) or roll back")
    m.add_argument("action", choices=["install", "rollback"])
    m.add_argument("bundle_dir", nargs="?", type=Path, help="bundle folder to install (e.g. on a USB stick)")
    m.add_argument("--config", type=Path)
    m.add_argument("--state-dir")
    m.add_argument("--allow-downgrade", action="store_true",
                   help="install a bundle older than the installed one (recorded in the audit log)")
    m.set_defaults(func=_model)
    c = sub.add_parser("classify", parents=[common], help="classify image files and print the screening results")
    c.add_argument("images", nargs="+")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_classify)
    e = sub.add_parser("evaluate", parents=[common], help="evaluate the bundle on a labelled folder as the device runs it")
    e.add_argument("--data", required=True, type=Path,
                   help="all-pbs-224 (fields, labelled per field) or pbc-normal (cells, labelled per cell: "
                        "the differential's per-class figures)")
    e.add_argument("--split", default="test", choices=["test", "val", "train", "all"],
                   help="which of the bundle's recorded splits to use (default: test; pbc-normal: split by image)")
    e.add_argument("--case-size", type=int, nargs="+", metavar="K",
                   help="also call non-overlapping cases of K fields from one patient-proxy block (several K allowed)")
    e.add_argument("--compare-views", action="store_true",
                   help="read every field in every view and adaptively, and print what changed (issue 36)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_evaluate)
    from edge.district_read import add_parser as add_district_read

    add_district_read(sub)
    v = sub.add_parser("survey", help="quality figures (focus, saturation, brightness, noise, "
                       "dark border) over a folder of fields")
    v.add_argument("folder", type=Path)
    v.add_argument("--every", type=int, default=1, help="use every Nth image")
    v.add_argument("--blur", type=float, default=0.0, help="also measure after a Gaussian blur of this sigma")
    v.add_argument("--noise", type=float, default=0.0, help="also measure after Gaussian noise of this sigma")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_survey)
    b = sub.add_parser("bench", parents=[common], help="time the per-field path on the shipped sample fields")
    b.add_argument("--repeats", type=int, default=20)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_bench)
    r = sub.add_parser("robustness", parents=[common], help="the device pipeline under seeded capture conditions "
                       "(eyepiece, stray light, colour, exposure, defocus, noise, JPEG, orientation)")
    r.add_argument("--data", required=True, type=Path)
    r.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    r.add_argument("--condition", action="append", help="run only this condition (repeatable; default: all)")
    r.add_argument("--every", type=int, default=1, help="use every Nth field of the split")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_robustness)
    t = sub.add_parser("shortcuts", parents=[common], help="does the model read the cells? leukocyte-free, swap and "
                       "restain fields through the device pipeline, beside colour-only baselines")
    t.add_argument("--data", required=True, type=Path)
    t.add_argument("--split", default="test", choices=["test", "val"])
    t.add_argument("--every", type=int, default=1, help="use every Nth field of the split (and of training)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true")
    t.add_argument("--pbc", type=Path, help="pbc-normal: also run the site check (edge/evaluation/site_check.py)")
    t.set_defaults(func=_shortcuts)
    return p


#: The exit status of a release that finds a record written by a newer one (EX_CONFIG); the
#: systemd unit lists it in RestartPreventExitStatus, so it stops once instead of every 5 s.
SCHEMA_NEWER_EXIT = 78


def main(argv: list[str] | None = None) -> int:
    from edge.record.errors import SchemaNewer

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SchemaNewer as exc:  # not a failure a restart mends: the unit does not restart on this status
        print(f"error: {exc}", file=sys.stderr)
        return SCHEMA_NEWER_EXIT
    except (BundleError, ConfigError, CameraError, DatasetError, RuntimeUnavailable, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
