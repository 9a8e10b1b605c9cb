"""A kill -9 mid-stream loses no result that was reported as saved and leaves a consistent store."""

from __future__ import annotations

import signal
import threading
import time

import requests

from edge.record.store import StoreConfig
from edge.record.store import Store

from conftest import ServerProcess, sample_paths


def test_kill_9_while_saving(tmp_path):
    server = ServerProcess(tmp_path / "state", "--demo")
    images = [p.read_bytes() for p in sample_paths()]
    acknowledged: list[int] = []
    stop = threading.Event()

    def client(offset: int) -> None:
        for i in range(200):  # bounded: at most 200 requests per client
            if stop.is_set():
                return
            try:
                r = requests.post(f"{server.url}/api/classify", headers=server.headers(), timeout=5,
                                  files={"image": ("f.jpg", images[(i + offset) % len(images)])})
            except requests.RequestException:
                return
            if r.status_code == 200:
                acknowledged.append(r.json()["id"])

    clients = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for c in clients:
        c.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 25 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.proc.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
    server.proc.wait(timeout=10)
    stop.set()
    for c in clients:
        c.join(timeout=10)
    assert len(acknowledged) >= 25

    store = Store(tmp_path / "state", StoreConfig(min_free_mb=0))
    try:
        assert store.integrity_ok()
        for rid in acknowledged:
            record = store.get(rid)
            assert record is not None, f"result {rid} was acknowledged but lost"
            assert store.file_path(rid, "image").stat().st_size > 0
            assert store.file_path(rid, "overlay").stat().st_size > 0
        referenced = {store.file_path(r["id"], k).name for r in store.recent(500) for k in ("image", "overlay")}
        assert {p.name for p in (tmp_path / "state" / "images").iterdir()} == referenced
    finally:
        store.close()
