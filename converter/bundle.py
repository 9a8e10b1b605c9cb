"""Writing a model bundle: files, sha256 of each, reference outputs, manifest, model card,
and optionally its signature; atomically. Any rewrite drops the old signature (it signed
another manifest): sign last, after ``compile``."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.model import reference
from edge.model.bundle import (CARD_KEY, CPU_MODEL, EDGETPU_MODEL, FORMAT_VERSION, MANIFEST, MODEL_CARD, Bundle,
                               content_id, sha256_file)
from edge.model.inference import CpuBackend
from edge.analysis.labels import LABELS
from edge.analysis.screening import Calibration
from edge.analysis.segmentation import SegmentationParams
from edge.model.signing import sign_manifest

from converter.model_card import render_model_card


def _reference_outputs(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The CPU int8 model's raw outputs on the shipped sample fields (``edge.model.reference``)."""
    bundle = Bundle(root, manifest, SegmentationParams.from_dict(manifest["segmentation"]),
                    Calibration.from_dict(manifest["calibration"]))
    backend = CpuBackend(root / CPU_MODEL, num_threads=1)
    return {"backend": "cpu", "runtime": backend.runtime, "fields": reference.outputs(bundle, backend)}


def release_number() -> int:
    """The release sequence a device compares to refuse downgrades (``edge.device.modelstore``):
    the UTC time of writing, as YYYYMMDDHHMMSS, so every write (a build, a re-measure, a compile)
    is newer than the bundles written before it on a machine whose clock is right."""
    return int(time.strftime("%Y%m%d%H%M%S", time.gmtime()))


def _without_measured_ids(value: Any) -> Any:
    """``value`` with every ``model_id`` inside it removed. A report made by a device command
    (``evaluate``, ``shortcuts``) names the bundle it measured, and in a build or a re-measure
    that is the bundle before it was written, whose id is not the written one's: inside a
    manifest, the manifest's own id is the only true one."""
    if isinstance(value, dict):
        return {k: _without_measured_ids(v) for k, v in value.items() if k != "model_id"}
    if isinstance(value, list):
        return [_without_measured_ids(v) for v in value]
    return value


def write_bundle(out: Path, files: dict[str, Path], manifest: dict[str, Any], sign_key: Path | None = None) -> Path:
    """Write ``files`` (bundle name -> source path) and the manifest into ``out``, signed
    with the private key at ``sign_key`` when given.

    The bundle is assembled beside ``out`` and swapped in at the end, so a crash never
    leaves a half-written bundle where the device would look for one.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700: the device's service user must be able to read a bundle
    try:
        for name, source in files.items():
            if source.resolve() != (staging / name).resolve():
                shutil.copyfile(source, staging / name)
        if manifest.get("kind") == "cells":  # the sample cells, cut here once (edge.model.reference)
            reference.write_reference_inputs(
                Bundle(staging, manifest, SegmentationParams.from_dict(manifest["segmentation"]), Calibration()),
                staging / reference.REFERENCE_INPUTS)
            files = {**files, reference.REFERENCE_INPUTS: staging / reference.REFERENCE_INPUTS}
        full = {
            "format_version": FORMAT_VERSION,
            "labels": list(LABELS),
            **{k: _without_measured_ids(v) for k, v in manifest.items() if k != "model_id"},
            "release": release_number(),
            "files": {name: sha256_file(staging / name) for name in sorted(files)},
        }
        full["reference_outputs"] = _reference_outputs(staging, full)
        full = {"format_version": FORMAT_VERSION, "model_id": content_id(full), **full}
        (staging / MODEL_CARD).write_text(render_model_card(full))
        full[CARD_KEY] = sha256_file(staging / MODEL_CARD)  # signed with the manifest; not in the id
        (staging / MANIFEST).write_text(json.dumps(full, indent=2) + "\n")
        if sign_key is not None:
            sign_manifest(staging, sign_key)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def rewrite_bundle(root: Path, extra_files: dict[str, Path] | None = None, sign_key: Path | None = None,
                   **updates: Any) -> Path:
    """Rewrite an existing bundle in place: its model files plus ``extra_files``, its manifest
    with ``updates``; hashes, reference outputs, model id and card are recomputed, and the
    result is signed with ``sign_key`` when given (unsigned otherwise)."""
    root = Path(root)
    names = [CPU_MODEL] + ([EDGETPU_MODEL] if (root / EDGETPU_MODEL).exists() else [])
    files = {name: root / name for name in names} | (extra_files or {})
    manifest = json.loads((root / MANIFEST).read_text())
    for computed in ("format_version", "model_id", "labels", "files", "reference_outputs", "release", CARD_KEY):
        manifest.pop(computed, None)
    return write_bundle(root, files, manifest | updates, sign_key)
