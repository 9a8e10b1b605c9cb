"""The model bundle: a folder with the int8 model(s), ``manifest.json`` and a model card.

The device trusts nothing it cannot verify: a trusted key must have signed the manifest
(``edge.model.signing``), checked first, before any file is read, so an unsigned bundle costs
nothing to refuse; the format version must be one this code reads; every file the manifest
lists must be a regular file (not a link), within ``MAX_BUNDLE_BYTES`` together, and match its
sha256; the model card must match the sha256 the signed manifest gives it; the model id must be
the manifest's own hash. Otherwise the bundle is refused with a message saying which check failed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.analysis.case import CaseRule
from edge.analysis.cells import CellParams

from edge.analysis.labels import DIFFERENTIAL, LABELS
from edge.analysis.screening import Calibration
from edge.analysis.segmentation import SegmentationParams
from edge.model.ood import AppearanceCheck, OodCheck
from edge.model.signing import SignatureError, Trust, verify_manifest

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CPU_MODEL = "model.tflite"
EDGETPU_MODEL = "model_edgetpu.tflite"
MODEL_CARD = "MODEL_CARD.md"
#: The manifest key holding the model card's sha256. The card is rendered from the finished
#: manifest (it names the model id), so its hash is left out of the model id, and covered by
#: the signature, which signs the manifest's bytes.
CARD_KEY = "model_card_sha256"
#: Larger bundles are refused before hashing: today's is a few MB; this leaves room for a
#: compiled model beside the CPU one while a bundle cannot make the device hash gigabytes.
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def default_bundle_path() -> Path:
    """The shipped bundle: ``$BLASTSCOPE_BUNDLE``, else ``models/default`` in a source checkout,
    else the copy ``deploy/install.sh`` puts beside the virtual environment
    (``models/default`` next to ``venv`` in ``/opt/blastscope/current``, the running release)."""
    env = os.environ.get("BLASTSCOPE_BUNDLE")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "models" / "default"  # edge/model/bundle.py
    installed = Path(sys.prefix).parent / "models" / "default"
    return installed if not checkout.exists() and installed.exists() else checkout


def content_id(manifest: dict[str, Any]) -> str:
    """The model id: a hash of the manifest without its id. The manifest lists the sha256 of
    every model file, so the id names the whole content, is a plain hex name (safe as a folder
    name) and changes whenever any of it does; it is recomputed, never taken on trust."""
    body = {k: v for k, v in manifest.items() if k not in ("model_id", CARD_KEY)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class BundleError(ValueError):
    """The bundle cannot be used; the message says which file and which check."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict[str, Any]
    segmentation: SegmentationParams
    calibration: Calibration
    signer: str | None = None  # the trusted public key that signed it; None: unsigned, allowed by config

    @property
    def model_id(self) -> str:
        return str(self.manifest["model_id"])

    @property
    def kind(self) -> str:
        """``field`` (one model input pair per field) or ``cells`` (one per white cell)."""
        return str(self.manifest.get("kind", "field"))

    # parsed once per bundle, not per frame: the pipeline reads these for every field (a frozen
    # dataclass still takes cached_property, which writes the instance dict directly)
    @functools.cached_property
    def cells(self) -> CellParams | None:
        """How a cell bundle finds and cuts cells; None for a field bundle."""
        return CellParams.from_dict(self.manifest["cells"]) if self.kind == "cells" else None

    @functools.cached_property
    def cell_labels(self) -> tuple[str, ...]:
        """What each output of a cell model means: the four labels, or the differential
        (``edge.analysis.labels.DIFFERENTIAL``) recorded as ``cell_labels`` by its build."""
        return tuple(self.manifest.get("cell_labels", LABELS))

    @property
    def differential(self) -> bool:
        return self.cell_labels != LABELS

    @functools.cached_property
    def ood(self) -> OodCheck | None:
        data = self.manifest.get("ood")
        return OodCheck.from_dict(data) if data else None

    @functools.cached_property
    def appearance(self) -> AppearanceCheck | None:
        """The field-level appearance check; None for a bundle built before it."""
        data = self.manifest.get("ood_appearance")
        return AppearanceCheck.from_dict(data) if data else None

    @functools.cached_property
    def case_rule(self) -> "CaseRule | None":
        """The rule that calls a case from its fields; None for a bundle built before cases."""
        data = self.manifest.get("case_rule")
        return CaseRule.from_dict(data) if data else None

    @property
    def release(self) -> int:
        """The release sequence (``converter.bundle.release_number``); 0 for a bundle written
        before releases were numbered, so any numbered release is newer."""
        return int(self.manifest.get("release", 0))

    @property
    def cpu_model(self) -> Path:
        return self.root / CPU_MODEL

    @property
    def edgetpu_model(self) -> Path | None:
        path = self.root / EDGETPU_MODEL
        return path if EDGETPU_MODEL in self.manifest["files"] else None


def load_bundle(root: Path | str, trust: Trust = Trust()) -> Bundle:
    """Read and verify a bundle folder; by default only the release key is trusted. A symlink (the state directory's ``current``) is
    resolved here, once: a daemon that later re-opens a model file (an Edge TPU re-probe)
    must get the bundle it verified at start, not whatever ``current`` points to by then."""
    root = Path(root).resolve()
    manifest_path = root / MANIFEST
    try:
        if manifest_path.is_symlink() or manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest_path}: not a regular file of at most {MAX_MANIFEST_BYTES >> 20} MB")
        manifest_bytes = manifest_path.read_bytes()
        manifest = json.loads(manifest_bytes)
    except FileNotFoundError:
        raise BundleError(f"{manifest_path}: no manifest; is {root} a BlastScope model bundle?") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from None
    try:  # first: an untrusted bundle is refused before any of its files is read
        signer = verify_manifest(root, manifest_bytes, trust)
    except SignatureError as exc:
        raise BundleError(str(exc)) from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: manifest is not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format version {version!r} is not supported (this software reads {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or CPU_MODEL not in files:
        raise BundleError(f"{manifest_path}: manifest lists no {CPU_MODEL}")
    listed = dict(files)
    if CARD_KEY in manifest:
        listed[MODEL_CARD] = manifest[CARD_KEY]
    total = 0
    for name in listed:
        path = root / name
        if not isinstance(name, str) or Path(name).name != name or name in (MANIFEST, "..", "."):
            raise BundleError(f"{manifest_path}: lists {name!r}, which is not a plain file name in the bundle")
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise BundleError(f"{path}: not a regular file; a bundle holds regular files only, no links")
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        total += path.stat().st_size
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(f"{root}: the listed files hold {total >> 20} MB, more than a bundle may "
                          f"({MAX_BUNDLE_BYTES >> 20} MB)")
    for name, expected in listed.items():
        path = root / name
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"{path}: sha256 {actual[:12]}... does not match the manifest ({str(expected)[:12]}...); the file is damaged or was changed")
    if manifest.get("model_id") != content_id(manifest):
        raise BundleError(f"{manifest_path}: model id {str(manifest.get('model_id'))[:40]!r} does not match the "
                          f"manifest's content ({content_id(manifest)}); the manifest was changed after it was written")
    if tuple(manifest.get("labels", ())) != LABELS:
        raise BundleError(f"{manifest_path}: labels {manifest.get('labels')} differ from {list(LABELS)}")
    cell_labels = tuple(manifest.get("cell_labels", LABELS))
    if cell_labels[:len(LABELS)] != LABELS or not set(cell_labels) <= set(DIFFERENTIAL) or \
            len(set(cell_labels)) != len(cell_labels):
        raise BundleError(f"{manifest_path}: cell_labels {list(cell_labels)} are not the four labels followed by "
                          f"classes of the differential ({', '.join(DIFFERENTIAL[len(LABELS):])})")
    try:
        segmentation = SegmentationParams.from_dict(manifest["segmentation"])
        calibration = Calibration.from_dict(manifest["calibration"])
        if manifest.get("kind", "field") not in ("field", "cells"):
            raise ValueError(f"kind {manifest.get('kind')!r} is neither 'field' nor 'cells'")
        if manifest.get("kind") == "cells":
            CellParams.from_dict(manifest["cells"])
            OodCheck.from_dict(manifest["ood"])
            if manifest.get("ood_appearance"):
                AppearanceCheck.from_dict(manifest["ood_appearance"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{manifest_path}: invalid segmentation, calibration or cell section ({exc})") from None
    return Bundle(root=root, manifest=manifest, segmentation=segmentation, calibration=calibration, signer=signer)
