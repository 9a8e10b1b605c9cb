"""No link at all (issue 37, item 5): cases to the district on a USB stick, and the district's
acknowledgement back the same way.

``export_cases`` writes the cases waiting in the outbox as a DICOM File-set (a DICOMDIR, pydicom)
under ``BLASTSCOPE/<device>/`` with a manifest of every file's sha256, authenticated with
HMAC-SHA256 keyed by the device's district password: the district already holds that secret
(the device's user on its server), so the stick needs no new keys, and a file changed or added on
the way is refused. ``import_stick`` (at the district) checks the manifest and every file, stores
the instances by STOW-RS, and writes an acknowledgement authenticated the same way; ``apply_ack``
(back on the device) checks it and marks those cases sent, audited. The cases stay waiting
until then: a stick lost on the way loses nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any, Callable

from edge.record.store import Store

MANIFEST, ACK = "BLASTSCOPE_MANIFEST.json", "BLASTSCOPE_ACK.json"


def _mac(secret: str, payload: dict[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _signed(path: Path, secret: str, what: str) -> dict[str, Any]:
    """The payload of a manifest or acknowledgement at ``path``, after its HMAC is checked."""
    try:
        doc = json.loads(path.read_text())
        payload, mac = doc["payload"], str(doc["hmac"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a BlastScope {what} ({type(exc).__name__})") from exc
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise ValueError(f"{path}: the {what} does not match this device's district password (changed on the way, "
                         f"or from another device)")
    return payload


def _write_signed(path: Path, secret: str, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"payload": payload, "hmac": _mac(secret, payload)}, indent=1))
    tmp.replace(path)


def export_cases(store: Store, device: str, model_id: str, final_call: Callable[[int], str | None], dest: Path,
                 secret: str, client: str) -> dict[str, Any]:
    """The outbox's waiting cases as a DICOM File-set on ``dest`` with its manifest."""
    from pydicom.fileset import FileSet

    from edge.record.dicom import case_instances, case_study_uid

    root = Path(dest) / "BLASTSCOPE" / device
    if (root / MANIFEST).exists():
        raise ValueError(f"{root}: an export of this device is already there; take it to the district first")
    parcels = store.outbox.due(float("inf"), limit=10_000)
    if not parcels:
        raise ValueError("no case is waiting for the district")
    fileset = FileSet()
    cases: list[dict[str, Any]] = []
    for parcel in parcels:
        case = store.get_case(parcel.case_id)
        if case is None:
            continue
        instances = case_instances(case, lambda rid: store.file_path(rid, "image"), device, model_id,
                                   final_call(parcel.case_id))
        for ds in instances:
            fileset.add(ds)
        cases.append({"case_id": parcel.case_id, "code": case["code"], "study_uid": case_study_uid(device, parcel.case_id),
                      "instances": [str(ds.SOPInstanceUID) for ds in instances]})
    root.mkdir(parents=True, exist_ok=True)
    fileset.write(root)
    files = {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}
    payload = {"device": device, "created": time.time(), "cases": cases, "files": files}
    _write_signed(root / MANIFEST, secret, payload)
    store.audit(client, "district.usb_export", after={"cases": [c["case_id"] for c in cases], "to": str(root)})
    return payload


def import_stick(folder: Path, secret: str, store_instances: Callable[[list], None]) -> dict[str, Any]:
    """At the district: check ``folder`` (one device's ``BLASTSCOPE/<device>``), store its
    instances, write the acknowledgement; the manifest's payload."""
    import pydicom

    folder = Path(folder)
    payload = _signed(folder / MANIFEST, secret, "manifest")
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in (MANIFEST, ACK)}
    if present != set(payload["files"]):
        extra, missing = sorted(present - set(payload["files"])), sorted(set(payload["files"]) - present)
        raise ValueError(f"{folder}: files not as the manifest lists them (extra: {extra or 'none'}, missing: "
                         f"{missing or 'none'}); nothing imported")
    for name, digest in payload["files"].items():
        if _sha256(folder / name) != digest:
            raise ValueError(f"{folder / name}: changed since the device wrote it; nothing imported")
    wanted = {uid for case in payload["cases"] for uid in case["instances"]}
    instances = [ds for ds in (pydicom.dcmread(folder / name) for name in sorted(payload["files"]) if name != "DICOMDIR")
                 if str(ds.SOPInstanceUID) in wanted]
    if len(instances) != len(wanted):
        raise ValueError(f"{folder}: {len(wanted) - len(instances)} instances the manifest names are not there")
    if instances:
        store_instances(instances)
    _write_signed(folder / ACK, secret, {"device": payload["device"], "manifest_created": payload["created"],
                                         "received": [c["case_id"] for c in payload["cases"]], "at": time.time()})
    return payload


def apply_ack(store: Store, device: str, dest: Path, secret: str, client: str) -> list[int]:
    """Back on the device: the acknowledgement on ``dest`` checked, its cases marked sent."""
    root = Path(dest) / "BLASTSCOPE" / device
    ack = _signed(root / ACK, secret, "acknowledgement")
    if ack.get("device") != device:
        raise ValueError(f"{root / ACK}: acknowledges device {ack.get('device')!r}, not {device!r}")
    manifest = _signed(root / MANIFEST, secret, "manifest")
    counts = {c["case_id"]: len(c["instances"]) for c in manifest["cases"]}
    marked = []
    for case_id in ack["received"]:
        parcel = store.outbox.get(int(case_id))
        if parcel is not None and parcel.state != "sent":
            store.outbox.sent(int(case_id), counts.get(case_id, 0), via="USB")
            marked.append(int(case_id))
    store.audit(client, "district.usb_ack", after={"cases": marked, "from": str(root)})
    return marked
