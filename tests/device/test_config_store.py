"""Config precedence and validation; store retention and orphan sweeping."""

from __future__ import annotations

import time

import pytest

from edge.model.bundle import load_bundle
from edge.device.config import ConfigError, StoreConfig, load_config
from edge.analysis.imagefile import read_rgb
from edge.pipeline import Pipeline
from edge.record.store import Store

from conftest import sample_paths


def test_config_layers_toml_environment_and_flags(tmp_path):
    toml = tmp_path / "config.toml"
    toml.write_text('[server]\nport = 9000\npin = "123456"\n[camera]\nsource = "opencv:0"\nfps = 2\n')
    cfg = load_config(toml, environ={"BLASTSCOPE_PIN": "987650", "BLASTSCOPE_STATE_DIR": "/srv/state"},
                      overrides={"server.port": 9100})
    assert cfg.server.port == 9100 and cfg.server.pin == "987650" and cfg.camera.fps == 2.0
    assert cfg.camera.source == "opencv:0" and str(cfg.state_dir) == "/srv/state"


@pytest.mark.parametrize("text, message", [
    ('[inference]\nbackend = "tpu"\n', "config: inference.backend: Input should be 'auto', 'edgetpu' or 'cpu'"),
    ('[quality]\nmax_clipped = 2\n', "config: quality.max_clipped: Input should be less than or equal to 1"),
    ('[server]\npin = "12"\n', "config: server.pin: String should match pattern '^([0-9]{6,12})?$'"),
    ('[camera]\nsource = "usb"\n', "config: camera.source: String should match pattern"),
    ('[store]\nmax_results = true\n', "config: store.max_results: must be a number, not true or false"),
    ('[store]\nmax_result = 5\n', "config: unknown key store.max_result"),
    ('[inference]\ntrusted_keys = ["ed25519:short"]\n', "config: inference.trusted_keys: public key"),
    ('[server]\nport = "eighty"\n', "config: server.port: Input should be a valid integer"),
    ('[cloud]\nurl = "x"\n', "unknown section [cloud]"),
    ("[server\n", "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, text, message):
    toml = tmp_path / "config.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(toml, environ={})
    assert message in str(exc.value)


def _results(bundle_dir, n):
    pipeline = Pipeline.on_cpu(load_bundle(bundle_dir))
    fields = [read_rgb(p) for p in sample_paths()]
    return [pipeline.process(fields[i % len(fields)]) for i in range(n)]


def test_retention_by_count_removes_oldest_with_files(tmp_path, default_bundle):
    store = Store(tmp_path, StoreConfig(max_results=3, max_age_days=1, min_free_mb=0))
    results = _results(default_bundle, 5)
    results[0].created = time.time() - 3 * 86400  # an old wall-clock date alone deletes nothing (no RTC on a Pi)
    ids = [store.save(r) for r in results]
    kept = [r["id"] for r in store.recent(10)]
    assert kept == ids[:1:-1]  # the newest three, newest first: the count rule only
    assert len(list((tmp_path / "images").iterdir())) == 6  # image + overlay each, nothing stale
    assert store.integrity_ok()
    store.close()


def test_orphan_files_are_quarantined_and_temp_files_removed_at_start(tmp_path, default_bundle):
    store = Store(tmp_path, StoreConfig(min_free_mb=0))
    rid = store.save(_results(default_bundle, 1)[0])
    store.close()
    (tmp_path / "images" / "deadbeef.jpg").write_bytes(b"left by a crash")
    (tmp_path / "images" / "deadbeef.tmp").write_bytes(b"half written")
    reopened = Store(tmp_path, StoreConfig(min_free_mb=0))
    assert reopened.quarantined == 1 and reopened.get(rid) is not None
    assert (tmp_path / "quarantine" / "deadbeef.jpg").read_bytes() == b"left by a crash"
    assert not (tmp_path / "images" / "deadbeef.tmp").exists()
    assert reopened.file_path(rid, "overlay").exists()
    reopened.close()
