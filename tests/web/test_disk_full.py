"""A full disk (issue 34 item 7) on a real 8 MB tmpfs: a review, a sign-out and a field answer
507 with words, never a bare 500, and nothing already stored is lost; a write that fails for
another reason is a 500 that names it, never "storage full"."""

from __future__ import annotations

import errno
import io
import os
import sqlite3

import pytest

from edge.record.store import is_full

from conftest import PIN, TOKEN, mounted_tmpfs, sample_paths

BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def full_device(tmp_path):
    from edge.device.config import load_config
    from edge.device.service import Service
    from edge.model.bundle import default_bundle_path, load_bundle
    from edge.pipeline import Pipeline
    from edge.record.store import Store
    from edge.web import create_app
    from edge.web.auth import load_credentials

    with mounted_tmpfs(tmp_path / "small", "8m") as mnt:
        cfg = load_config(None, environ={}, overrides={"store.state_dir": str(mnt), "store.min_free_mb": 0,
                                                        "server.pin": PIN, "server.token": TOKEN})
        bundle = load_bundle(default_bundle_path())
        service = Service(cfg, bundle, Pipeline.on_cpu(bundle, threads=1), Store(mnt, cfg.store), camera=None)
        app = create_app(service, load_credentials(mnt, PIN, TOKEN), cfg.server)
        yield app.test_client(), mnt
        service.analyses.close()
        service.store.close()


def _fill(folder) -> None:
    """Another program writes until nothing is free."""
    with open(folder / "other-program.bin", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_full_disk_gives_507_on_every_write(full_device):
    client, mnt = full_device
    case = client.post("/api/cases", json={"code": "FULL-1"}, headers=BEARER).get_json()
    path = sample_paths()[0]
    field = client.post(f"/api/cases/{case['id']}/classify", headers=BEARER,
                        data={"image": (io.BytesIO(path.read_bytes()), path.name)}).get_json()
    _fill(mnt)
    case = client.get(f"/api/cases/{case['id']}", headers=BEARER).get_json()
    review = client.post(f"/api/cases/{case['id']}/review", headers=BEARER,
                         json={"call": "negative", "reason": "read", "revision": case["revision"]})
    assert review.status_code == 507 and "storage full" in review.get_json()["error"], review.get_json()
    sign = client.post(f"/api/cases/{case['id']}/sign", headers=BEARER,
                       json={"call": "negative", "reason": "read", "revision": case["revision"]})
    assert sign.status_code == 507, sign.get_json()
    upload = client.post(f"/api/cases/{case['id']}/classify", headers=BEARER,
                         data={"image": (io.BytesIO(path.read_bytes()), path.name)})
    assert upload.status_code == 507 and "storage full" in upload.get_json()["error"]
    os.unlink(mnt / "other-program.bin")
    again = client.get(f"/api/cases/{case['id']}", headers=BEARER).get_json()
    assert [f["id"] for f in again["fields"]] == [field["id"]] and again["review"] is None  # nothing lost, nothing half-written


def test_only_a_full_disk_is_storage_full():
    assert is_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_full(OSError(errno.EIO, "Input/output error"))
    assert not is_full(sqlite3.OperationalError("disk I/O error"))
