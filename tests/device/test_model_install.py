"""Model installs that survive a power cut: every file and folder reaches the disk before
``current`` switches, and a daemon whose installed model no longer verifies starts on the
previous one, then on the shipped one, and says so in its status."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edge.device import modelstore
from edge.device.config import load_config
from edge.device.modelstore import CURRENT, PREVIOUS, install_bundle, models_dir, startup_bundle
from edge.model.bundle import default_bundle_path
from edge.model.signing import RELEASE_KEYS, Trust

from conftest import resign, run_cli


def test_every_copied_file_and_folder_is_fsynced_before_current_switches(bundle_copy, tmp_path, monkeypatch):
    """A spy on ``os.fsync`` and ``os.replace`` (the power cut itself cannot be staged here):
    the new bundle's files and folder are synced before the rename that makes it ``current``,
    and the models folder after it."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(modelstore.os, "fsync", fsync)
    monkeypatch.setattr(modelstore.os, "replace", replace)
    state = tmp_path / "state"
    bundle, _, _ = install_bundle(bundle_copy, state)
    folder = models_dir(state).resolve()
    dest = folder / bundle.model_id
    switch = events.index(("replace", str(folder / CURRENT)))
    synced_before = {path for kind, path in events[:switch] if kind == "fsync"}
    for child in dest.iterdir():
        assert str(folder / f".{bundle.model_id}.incoming" / child.name) in synced_before, child.name
    assert str(folder / f".{bundle.model_id}.incoming") in synced_before  # its entries
    assert ("fsync", str(folder)) in events[switch + 1:]  # and the switch itself


def _installed_twice(bundle_copy: Path, tmp_path: Path, test_key) -> tuple[Path, str, str]:
    key_path, public = test_key
    trust = Trust(RELEASE_KEYS + (public,))
    state = tmp_path / "state"
    first, _, _ = install_bundle(bundle_copy, state, trust)
    second_src = tmp_path / "second"
    shutil.copytree(bundle_copy, second_src)
    resign(second_src, key_path, created="2026-12-02T00:00:00Z")  # another model id
    second, previous, _ = install_bundle(second_src, state, trust)
    assert previous == first.model_id and second.model_id != first.model_id
    return state, first.model_id, second.model_id


def _cut_power(bundle_dir: Path) -> None:
    """What the issue found after a cut 9 s after an install: the files there, zero bytes."""
    for child in bundle_dir.iterdir():
        child.write_bytes(b"")


def test_a_daemon_whose_current_model_was_cut_short_starts_on_the_previous_one(bundle_copy, tmp_path, test_key):
    state, first, second = _installed_twice(bundle_copy, tmp_path, test_key)
    _cut_power(models_dir(state) / second)
    bundle, notes = startup_bundle(state, Trust(RELEASE_KEYS + (test_key[1],)), default_bundle_path())
    assert bundle.model_id == first
    assert notes[0].startswith(f"the installed 'current' model ({second}) does not verify")
    assert f"running the 'previous' model {first} instead" in notes[-1]


def test_with_both_installed_models_broken_the_shipped_one_runs_and_the_status_says_why(bundle_copy, tmp_path,
                                                                                          test_key):
    from edge.daemon import build_service

    state, first, second = _installed_twice(bundle_copy, tmp_path, test_key)
    _cut_power(models_dir(state) / second)
    shutil.rmtree(models_dir(state) / first)  # previous: gone altogether
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nstate_dir = "{state}"\n[camera]\nsource = "replay:{bundle_copy}"\n'
                      f'[inference]\nbackend = "cpu"\n')
    service = build_service(load_config(config, environ={}))  # the camera is built, never started
    assert service.bundle.root == default_bundle_path().resolve()
    status = service.status()
    assert status["status"] == "degraded"
    reasons = " | ".join(status["degraded_reasons"])
    assert f"'current' model ({second}) does not verify" in reasons
    assert f"'previous' model ({first}) does not verify" in reasons
    assert "running the shipped model" in reasons and "install the model again" in reasons


def test_a_bundle_named_in_the_config_is_that_bundle_or_nothing(bundle_copy, tmp_path):
    from edge.daemon import build_service
    from edge.model.bundle import BundleError

    _cut_power(bundle_copy)
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nstate_dir = "{tmp_path / "state"}"\n[inference]\nbundle = "{bundle_copy}"\n'
                      'backend = "cpu"\n')
    with pytest.raises(BundleError, match="unreadable manifest"):
        build_service(load_config(config, environ={}))


def test_an_intact_install_starts_without_notes(bundle_copy, tmp_path):
    state = tmp_path / "state"
    bundle, _, _ = install_bundle(bundle_copy, state)
    started, notes = startup_bundle(state, Trust(), default_bundle_path())
    assert started.model_id == bundle.model_id and notes == []
    assert os.readlink(models_dir(state) / CURRENT) == bundle.model_id
    assert not (models_dir(state) / PREVIOUS).exists()


def test_an_older_signed_release_is_not_installed_over_a_newer_one_unless_asked_and_audited(bundle_copy, tmp_path,
                                                                                             test_key):
    """Both bundles verify and are signed; only the release number says which is older."""
    key_path, public = test_key
    config = tmp_path / "config.toml"
    state = tmp_path / "state"
    config.write_text(f'[store]\nstate_dir = "{state}"\n[inference]\ntrusted_keys = ["{public}"]\n')
    older, newer = tmp_path / "older", tmp_path / "newer"
    shutil.copytree(bundle_copy, older)
    shutil.copytree(bundle_copy, newer)
    resign(older, key_path, release=20261101000000)
    resign(newer, key_path, release=20261201000000)
    ok = run_cli("blastscope-edge", "model", "install", str(newer), "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    refused = run_cli("blastscope-edge", "model", "install", str(older), "--config", str(config))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "release 20261101000000 is older than the installed model" in refused.stderr
    assert "--allow-downgrade" in refused.stderr
    newer_id = os.readlink(models_dir(state) / CURRENT)
    allowed = run_cli("blastscope-edge", "model", "install", str(older), "--config", str(config), "--allow-downgrade")
    assert allowed.returncode == 0, allowed.stderr
    assert "downgrade: release 20261101000000 over 20261201000000" in allowed.stdout
    assert os.readlink(models_dir(state) / PREVIOUS) == newer_id
    from edge.record.store import Store

    store = Store(state)
    try:
        actions = [(e["action"], e["before"]["model_id"]) for e in reversed(store.audit_log())]
    finally:
        store.close()
    assert [a for a, _ in actions] == ["model install", "model downgrade"]
    assert actions[1][1] == newer_id


def test_the_converter_numbers_every_release_it_writes(bundle_copy, test_key):
    from converter.bundle import rewrite_bundle
    from edge.model.bundle import load_bundle

    before = load_bundle(bundle_copy).release
    rewrite_bundle(bundle_copy, sign_key=test_key[0])
    after = load_bundle(bundle_copy, Trust((test_key[1],))).release
    assert after > before and after > 20261201000000
