"""A clinic's record is not a cache: full disk, jumping clock, lost or corrupt database,
failed transactions, schema migration. Full-disk tests use a real small tmpfs (root only)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import requests

from edge.model.bundle import load_bundle
from edge.record.store import StoreConfig
from edge.analysis.imagefile import read_rgb
from edge.pipeline import Pipeline
from edge.record.schema import SCHEMA, SCHEMA_VERSION
from edge.record.store import DATABASE, QUARANTINE, RecordDamaged, Store, StoreFull

from conftest import mounted_tmpfs, ServerProcess, sample_paths


@pytest.fixture(scope="module")
def results(default_bundle):
    pipeline = Pipeline.on_cpu(load_bundle(default_bundle))
    return [pipeline.process(read_rgb(p)) for p in sample_paths()]


@pytest.fixture
def small_fs(tmp_path):
    """A real 6 MB filesystem (tmpfs), unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "small", "6m") as mnt:
        yield mnt


def _fill(folder: Path, leave_mb: float) -> Path:
    """Another program writes until only ``leave_mb`` is free."""
    import shutil

    hog = folder / "other-program.bin"
    free = shutil.disk_usage(folder).free - int(leave_mb * 1e6)
    with open(hog, "wb") as f:
        f.write(b"\0" * max(free, 0))
    return hog


def test_low_disk_refuses_new_fields_and_deletes_nothing(small_fs, results):
    store = Store(small_fs / "state", StoreConfig(min_free_mb=1.0))
    ids = [store.save(r) for r in results]
    hog = _fill(small_fs, leave_mb=0.5)  # another program takes the disk below the floor
    with pytest.raises(StoreFull, match="new fields are refused and every stored result is kept"):
        store.save(results[0])
    assert [r["id"] for r in store.recent(100)] == ids[::-1]
    assert all(store.file_path(i, "image").exists() for i in ids)
    hog.unlink()
    assert store.save(results[1]) > ids[-1]  # space back: it carries on
    store.close()


def test_full_disk_with_no_floor_is_a_clear_error_and_leaves_no_temp_files(small_fs, results):
    store = Store(small_fs / "state", StoreConfig(min_free_mb=0))
    ids = [store.save(r) for r in results[:3]]
    _fill(small_fs, leave_mb=0.01)
    with pytest.raises(StoreFull, match="could not be stored"):
        for r in results * 4:  # bounded: some save must hit ENOSPC
            store.save(r)
    assert all(store.get(i) for i in ids)
    assert not list((small_fs / "state" / "images").glob("*.tmp"))
    store.close()  # a full disk does not make closing fail
    reopened = Store(small_fs / "state", StoreConfig(min_free_mb=0))
    assert all(reopened.get(i) for i in ids) and reopened.integrity_ok()
    reopened.close()


def test_daemon_answers_507_and_says_degraded_on_a_full_disk(small_fs, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[store]\nmin_free_mb = 1.0\n")
    server = ServerProcess(small_fs / "state", "--demo", "--config", str(config))
    try:
        image = sample_paths()[0].read_bytes()
        first = requests.post(f"{server.url}/api/classify", headers=server.headers(), files={"image": ("f.jpg", image)},
                              timeout=30)
        assert first.status_code == 200
        _fill(small_fs, leave_mb=0.5)
        refused = requests.post(f"{server.url}/api/classify", headers=server.headers(),
                                files={"image": ("f.jpg", image)}, timeout=30)
        assert refused.status_code == 507 and "every stored result is kept" in refused.json()["error"]
        status = requests.get(f"{server.url}/api/status", headers=server.headers(), timeout=10).json()
        assert status["status"] == "degraded" and any("storage full" in r for r in status["degraded_reasons"])
        kept = requests.get(f"{server.url}/api/results", headers=server.headers(), timeout=10).json()["results"]
        assert [r["id"] for r in kept] == [first.json()["id"]]
    finally:
        rc = server.stop()
    assert rc == 0, "".join(server.output)[-3000:]


def test_age_is_counted_on_the_devices_running_clock_not_the_wall_clock(tmp_path, results, monkeypatch):
    store = Store(tmp_path, StoreConfig(max_age_days=1, min_free_mb=0))
    first = store.save(results[0])
    real_time, real_mono = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: real_time() + 400 * 86400)  # no RTC: the clock jumps a year on
    store.save(results[1])
    assert store.get(first) is not None  # the jump deleted nothing
    monkeypatch.setattr(time, "monotonic", lambda: real_mono() + 2 * 86400)  # two days of real running
    store.apply_retention()
    assert store.get(first) is None
    deleted = [a for a in store.audit_log() if a["action"] == "retention.delete"]
    assert deleted and first in deleted[0]["before"]["ids"] and "running time" in deleted[0]["after"]["rule"]
    store.close()
    monkeypatch.setattr(time, "monotonic", real_mono)
    again = Store(tmp_path, StoreConfig(max_age_days=1, min_free_mb=0))
    assert again.run_seconds() >= 2 * 86400  # the running clock survives a restart
    again.close()


def test_missing_database_quarantines_images_instead_of_deleting_them(tmp_path, results):
    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    for r in results[:3]:
        store.save(r)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"{DATABASE}{suffix}").unlink(missing_ok=True)
    reopened = Store(tmp_path, StoreConfig(min_free_mb=0))
    assert reopened.quarantined == 6 and len(list((tmp_path / QUARANTINE).glob("*.jpg"))) == 6
    assert any("was missing" in m for m in reopened.recovered)
    reopened.close()


def test_corrupt_database_is_kept_aside_and_rebuilt(tmp_path, results):
    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    store.save(results[0])
    store.close()
    db = tmp_path / DATABASE
    data = bytearray(db.read_bytes())
    data[:100] = b"\x42" * 100  # a torn header
    db.write_bytes(bytes(data))
    reopened = Store(tmp_path, StoreConfig(min_free_mb=0))
    assert reopened.count() == 0 and reopened.quarantined == 2
    aside = list(tmp_path.glob(f"{DATABASE}.corrupt-*"))
    assert aside and aside[0].read_bytes()[:100] == b"\x42" * 100
    assert any("was unreadable" in m for m in reopened.recovered)
    # never a silent empty record (issue 34): read-only, saying which file and what to do
    assert reopened.read_only is not None and aside[0].name in reopened.read_only
    with pytest.raises(RecordDamaged, match="accept-new"):
        reopened.save(results[1])
    with pytest.raises(RecordDamaged):
        reopened.create_case("X-1", "", "test")
    assert list((tmp_path / "images").iterdir()) == []  # nothing half-written
    reopened.close()
    # a restart does not forget it; an admin's acceptance ends it, audited
    again = Store(tmp_path, StoreConfig(min_free_mb=0))
    assert again.read_only is not None
    assert again.accept_new_record("admin (test)") == [aside[0].name]
    assert again.read_only is None and again.save(results[1]) >= 1
    assert again.audit_log()[-1]["action"] == "record.accept_new" or any(
        a["action"] == "record.accept_new" for a in again.audit_log())
    again.close()
    assert Store(tmp_path, StoreConfig(min_free_mb=0)).read_only is None


def test_a_failed_transaction_is_rolled_back(tmp_path, results):
    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    with pytest.raises(RuntimeError):
        with store._transaction():
            store._db.execute("INSERT INTO results(created, status, image, overlay, data) VALUES (0,'x','a','b','{}')")
            raise RuntimeError("fault between the statements")
    assert not store._db.in_transaction and store.count() == 0
    assert store.save(results[0]) >= 1  # the next write works: nothing was left open
    store.close()


def test_schema_of_the_previous_release_is_migrated_in_place(tmp_path, results):
    db = sqlite3.connect(tmp_path / DATABASE)
    db.executescript(SCHEMA)  # what release 0.1.0 created (user_version 0)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"jpeg")
    (tmp_path / "images" / "a_overlay.jpg").write_bytes(b"jpeg")
    db.execute("INSERT INTO results(created, status, label, call, image, overlay, data) VALUES "
               "(1700000000, 'classified', 'pre_b', 'positive', 'a.jpg', 'a_overlay.jpg', '{\"label\": \"pre_b\"}')")
    db.commit()
    db.close()
    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.get(1)["label"] == "pre_b" and store.quarantined == 0
    store.audit("127.0.0.1", "test.action", before=None, after={"x": 1})
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("UPDATE audit SET action = 'forged'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._db.execute("DELETE FROM audit")
    store.close()
