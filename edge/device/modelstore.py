"""Model updates on the device: install a bundle (e.g. from a USB stick) and roll back.

Bundles live under ``<state>/models/<model_id>/``; ``current`` and ``previous`` are
symlinks to two of them. A new bundle is verified (format version, every sha256, model id,
signature by a trusted key) before and after it is copied, its model is run on the shipped
sample fields on every backend present and must reproduce the manifest's reference outputs
(``edge.model.reference``), and only then does ``current`` switch, by an atomic rename of a
symlink, so a bad, tampered or half-copied bundle never becomes the running model. Every
copied file and folder is fsynced before the switch and the switch itself before the install
reports success: after a power cut ``current`` names either the old bundle or a complete new
one. The daemon loads ``current`` at start (unless the config names a bundle explicitly); if
it does not verify, ``previous``, then the shipped bundle, with the status saying so
(``startup_bundle``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from edge.model import reference
from edge.model.inference import Backend
from edge.model.bundle import MANIFEST, MODEL_CARD, Bundle, BundleError, load_bundle
from edge.model.signing import SIGNATURE, Trust

CURRENT, PREVIOUS = "current", "previous"


def models_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "models"


def current_bundle_path(state_dir: Path) -> Path | None:
    link = models_dir(state_dir) / CURRENT
    return link if link.exists() else None


def _target(link: Path) -> str | None:
    return os.readlink(link) if link.is_symlink() else None


def _copy_listed(bundle: Bundle, staging: Path) -> None:
    """Copy the files the verified manifest lists, the manifest, its signature and the card:
    regular files only (``load_bundle`` refused links among the listed ones; the two others
    are checked here), nothing else on the stick."""
    staging.mkdir(parents=True)
    names = [MANIFEST, *bundle.manifest["files"], MODEL_CARD, SIGNATURE]
    for name in dict.fromkeys(names):
        path = bundle.root / name
        if name in (MODEL_CARD, SIGNATURE) and not path.exists() and not path.is_symlink():
            continue  # an unsigned bundle allowed by the config; a card is optional in old bundles
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"{path}: not a regular file; a bundle holds regular files only, no links")
        shutil.copyfile(path, staging / name)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Every file's data, then every folder's entries, from the leaves up: a rename of
    ``root`` that reaches the disk then names complete files, not zero-length ones."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            with open(Path(folder) / name, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(folder))


def _point(link: Path, target: str | None) -> None:
    """Atomically and durably make ``link`` point at ``target`` (a name inside the same folder)."""
    if target is None:
        link.unlink(missing_ok=True)
    else:
        tmp = link.with_name(f".{link.name}.new")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    _fsync_dir(link.parent)


def _prune(folder: Path) -> None:
    keep = {_target(folder / CURRENT), _target(folder / PREVIOUS)}
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


def _reproduces_references(bundle: Bundle, edgetpu_factory: Callable[[Path], Backend] | None) -> list[str]:
    """Run the reference fields on the CPU and, when the bundle has an Edge TPU model and an
    Edge TPU opens, on it too. Returns what was checked; raises ``BundleError`` on a mismatch."""
    from edge.model.edgetpu_process import EdgeTpuProcess
    from edge.model.inference import CpuBackend

    checked = []
    try:
        checked.append(reference.check(bundle, CpuBackend(bundle.cpu_model)))
        if bundle.edgetpu_model is not None:
            try:
                tpu = (edgetpu_factory or EdgeTpuProcess)(bundle.edgetpu_model)  # a native crash must not kill the install
            except Exception as exc:  # no device, or the running daemon holds it: say so, do not guess
                checked.append(f"edgetpu: not checked, no Edge TPU could be opened ({exc}); it is checked on the "
                               "next install with the device attached and the service stopped")
            else:
                try:
                    checked.append(reference.check(bundle, tpu))
                finally:
                    getattr(tpu, "close", lambda: None)()
    except BundleError:
        raise
    except Exception as exc:  # any failure to run or to match means the bundle must not go live
        raise BundleError(f"{bundle.root}: the model does not reproduce its reference outputs: "
                          f"{type(exc).__name__ + ': ' if not isinstance(exc, ValueError) else ''}{exc}") from None
    return checked


def install_bundle(source: Path, state_dir: Path, trust: Trust = Trust(),
                   edgetpu_factory: Callable[[Path], Backend] | None = None,
                   allow_downgrade: bool = False) -> tuple[Bundle, str | None, list[str]]:
    """Verify, copy and switch to ``source``; returns the new bundle, the previous model id
    and what the reference check covered. Raises ``BundleError`` (nothing changed) when the
    bundle is bad, or older than the installed one and ``allow_downgrade`` is not given: an
    older signed bundle is still a genuine one, so only its release number tells a rollback
    to a weaker model apart from an update."""
    incoming = load_bundle(source, trust)
    folder = models_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = incoming.model_id
    current = _target(folder / CURRENT)
    if current == name:
        return load_bundle(folder / name, trust), _target(folder / PREVIOUS), ["already installed"]
    installed_release = _release(folder / CURRENT, trust)
    if installed_release is not None and incoming.release < installed_release and not allow_downgrade:
        raise BundleError(f"{source}: release {incoming.release} is older than the installed model {current} "
                          f"(release {installed_release}); installing it would be a downgrade. Pass "
                          "--allow-downgrade to do that on purpose (it is recorded in the audit log)")
    downgrade = installed_release is not None and incoming.release < installed_release
    dest = folder / name
    if not dest.is_dir():
        staging = folder / f".{name}.incoming"
        shutil.rmtree(staging, ignore_errors=True)
        try:  # the copy itself must verify and run, not just the stick
            _copy_listed(incoming, staging)
            checked = _reproduces_references(load_bundle(staging, trust), edgetpu_factory)
        except BaseException:  # a refusal, a full disk or an interrupt: leave nothing half-copied
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_tree(staging)
        os.replace(staging, dest)
        _fsync_dir(folder)
    else:
        checked = _reproduces_references(load_bundle(dest, trust), edgetpu_factory)
    installed = load_bundle(dest, trust)
    _point(folder / PREVIOUS, current)
    _point(folder / CURRENT, name)
    _prune(folder)
    if downgrade:
        checked.append(f"downgrade: release {incoming.release} over {installed_release}, allowed by --allow-downgrade")
    return installed, current, checked


def _release(link: Path, trust: Trust) -> int | None:
    """The installed bundle's release, or None when nothing verifiable is installed."""
    if not link.is_symlink():
        return None
    try:
        return load_bundle(link, trust).release
    except BundleError:
        return None


def rollback(state_dir: Path, trust: Trust = Trust()) -> tuple[Bundle, str]:
    """Swap ``current`` and ``previous``; returns the now-current bundle and the replaced id."""
    folder = models_dir(state_dir)
    previous, current = _target(folder / PREVIOUS), _target(folder / CURRENT)
    if previous is None or not (folder / previous).is_dir():
        raise BundleError(f"{folder}: no previous model to roll back to")
    restored = load_bundle(folder / previous, trust)
    _point(folder / CURRENT, previous)
    _point(folder / PREVIOUS, current)
    return restored, str(current)


def startup_bundle(state_dir: Path, trust: Trust, shipped: Path) -> tuple[Bundle, list[str]]:
    """The bundle a daemon starts with when the config names none: ``current``, else
    ``previous``, else ``shipped``; and, when it is not ``current``, what went wrong, for the
    status to report (degraded) until a model is installed again. Raises ``BundleError`` only
    when the shipped bundle does not verify either."""
    folder = models_dir(state_dir)
    notes: list[str] = []
    for name in (CURRENT, PREVIOUS):
        link = folder / name
        if not link.is_symlink():
            continue
        try:
            bundle = load_bundle(link, trust)
        except BundleError as exc:
            notes.append(f"the installed '{name}' model ({_target(link)}) does not verify: {exc}")
            continue
        if notes:
            notes.append(f"running the '{name}' model {bundle.model_id} instead: install the model again "
                         "(blastscope-edge model install)")
        return bundle, notes
    bundle = load_bundle(shipped, trust)
    if notes:
        notes.append(f"running the shipped model {bundle.model_id} instead: install the model again "
                     "(blastscope-edge model install)")
    return bundle, notes
