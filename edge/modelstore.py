"""Model updates on the device: install a bundle (e.g. from a USB stick) and roll back.

Bundles live under ``<state>/models/<model_id>/``; ``current`` and ``previous`` are
symlinks to two of them. A new bundle is verified (format version, every sha256) before
and after it is copied, its model is run once on a shipped sample field, and only then
does ``current`` switch, by an atomic rename of a
symlink, so a bad or half-copied bundle never becomes the running model. The daemon loads
``current`` at start (unless the config names a bundle explicitly).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edge import SAMPLES_DIR
from edge.bundle import Bundle, BundleError, load_bundle
from edge.dataset import read_rgb

CURRENT, PREVIOUS = "current", "previous"


def models_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "models"


def current_bundle_path(state_dir: Path) -> Path | None:
    link = models_dir(state_dir) / CURRENT
    return link if link.exists() else None


def _target(link: Path) -> str | None:
    return os.readlink(link) if link.is_symlink() else None


def _point(link: Path, target: str | None) -> None:
    """Atomically make ``link`` point at ``target`` (a name inside the same folder)."""
    if target is None:
        link.unlink(missing_ok=True)
        return
    tmp = link.with_name(f".{link.name}.new")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _prune(folder: Path) -> None:
    keep = {_target(folder / CURRENT), _target(folder / PREVIOUS)}
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


def _runs(bundle: Bundle) -> None:
    """Refuse a bundle whose model cannot load or classify a real field on this device."""
    from edge.pipeline import Pipeline

    field = read_rgb(min(SAMPLES_DIR.glob("*.jpg")))
    try:
        result = Pipeline.on_cpu(bundle).process(field)
    except Exception as exc:  # any failure to run means the bundle must not go live
        raise BundleError(f"{bundle.root}: the model does not run ({type(exc).__name__}: {exc})") from None
    if result.raw_probabilities is None or not abs(float(result.raw_probabilities.sum()) - 1.0) < 0.05:
        raise BundleError(f"{bundle.root}: the model does not give class probabilities")


def install_bundle(source: Path, state_dir: Path) -> tuple[Bundle, str | None]:
    """Verify, copy and switch to ``source``; returns the new bundle and the previous model id.
    Raises ``BundleError`` (nothing changed) when the bundle is bad."""
    incoming = load_bundle(source)
    folder = models_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = incoming.model_id
    current = _target(folder / CURRENT)
    if current == name:
        return load_bundle(folder / name), _target(folder / PREVIOUS)
    dest = folder / name
    if not dest.is_dir():
        staging = folder / f".{name}.incoming"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        try:
            _runs(load_bundle(staging))  # the copy itself must verify and run, not just the stick
        except BundleError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.replace(staging, dest)
    installed = load_bundle(dest)
    _point(folder / PREVIOUS, current)
    _point(folder / CURRENT, name)
    _prune(folder)
    return installed, current


def rollback(state_dir: Path) -> tuple[Bundle, str]:
    """Swap ``current`` and ``previous``; returns the now-current bundle and the replaced id."""
    folder = models_dir(state_dir)
    previous, current = _target(folder / PREVIOUS), _target(folder / CURRENT)
    if previous is None or not (folder / previous).is_dir():
        raise BundleError(f"{folder}: no previous model to roll back to")
    restored = load_bundle(folder / previous)
    _point(folder / CURRENT, previous)
    _point(folder / PREVIOUS, current)
    return restored, str(current)
