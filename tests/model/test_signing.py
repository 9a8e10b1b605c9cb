"""Bundle origin and behaviour: Ed25519 signatures over the manifest, trusted keys in the
config, and reference outputs reproduced on every backend at install (issue 9, items 5-6).

Real signed and tampered bundles, the real ``model install`` and ``serve`` commands. The
Edge TPU cannot exist here: where a test needs one, a stand-in backend that runs the CPU
model under the name "edgetpu" takes its place, and the test says so.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
import requests

from converter.bundle import rewrite_bundle
from edge.model.bundle import EDGETPU_MODEL, BundleError, content_id, default_bundle_path, load_bundle
from edge.model.inference import CpuBackend, Inference
from edge.device.modelstore import install_bundle
from edge.model.signing import RELEASE_KEY, Trust, key_id

from conftest import ServerProcess, resign, run_cli, sample_paths


def test_shipped_bundle_is_signed_by_the_release_key_and_records_reference_outputs(default_bundle):
    bundle = load_bundle(default_bundle)  # default trust: the release key only, unsigned refused
    assert bundle.signer == RELEASE_KEY
    fields = bundle.manifest["reference_outputs"]["fields"]
    assert sorted(fields) == sorted(p.name for p in sample_paths())
    # the recorded outputs are what this software computes with this runtime (install checks the same
    # on every backend); they are a reproducibility check, not a claim that each sample is read right
    from edge.model import reference
    from edge.model.inference import CpuBackend

    again = reference.outputs(bundle, CpuBackend(bundle.cpu_model, 1))
    for name, rows in fields.items():  # a cell bundle records one row per cell of the sample
        assert rows and all(abs(sum(r) - 1) < 0.02 for r in rows)
        assert np.abs(np.asarray(rows) - np.asarray(again[name])).max() < 1e-4


def test_a_manifest_edited_and_re_hashed_by_an_attacker_is_refused(bundle_copy, tmp_path, trusting_config):
    """The attack of the issue: thresholds set to 1.0 (every malignant field called negative).
    With a recomputed model id the content check passes; the signature does not."""
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["calibration"] = {**manifest["calibration"], "threshold": 1.0}
    manifest["model_id"] = content_id(manifest)
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(BundleError, match="the signature does not match manifest.json"):
        load_bundle(bundle_copy)
    state = tmp_path / "state"
    r = run_cli("blastscope-edge", "model", "install", str(bundle_copy), "--state-dir", str(state),
                "--config", str(trusting_config))
    assert r.returncode == 2 and "the signature does not match manifest.json" in r.stderr and "Traceback" not in r.stderr
    assert not (state / "models" / "current").exists()
    assert not (state / "models" / manifest["model_id"]).exists()


def test_unsigned_and_untrusted_bundles_are_refused_unless_the_config_says_otherwise(bundle_copy, tmp_path, test_key):
    key_path, public = test_key
    (bundle_copy / "manifest.sig").unlink()
    with pytest.raises(BundleError, match="the bundle is not signed"):
        load_bundle(bundle_copy)
    assert load_bundle(bundle_copy, Trust(allow_unsigned=True)).signer is None
    r = run_cli("blastscope-edge", "serve", "--bundle", str(bundle_copy), "--state-dir", str(tmp_path / "s"),
                "--port", "0", "--source", "replay:" + str(sample_paths()[0].parent), timeout=60)
    assert r.returncode == 2 and "the bundle is not signed" in r.stderr and "Traceback" not in r.stderr

    resign(bundle_copy, key_path)  # signed, but by a key the device does not trust
    with pytest.raises(BundleError, match=f"signed by key {key_id(public)}, which this device does not trust"):
        load_bundle(bundle_copy)
    assert load_bundle(bundle_copy, Trust((public,))).signer == public


def test_daemon_runs_an_unsigned_bundle_only_when_allowed_and_says_so(bundle_copy, tmp_path):
    (bundle_copy / "manifest.sig").unlink()
    config = tmp_path / "dev.toml"
    config.write_text("[inference]\nallow_unsigned = true\n")
    srv = ServerProcess(tmp_path / "state", "--demo", "--bundle", str(bundle_copy), "--config", str(config))
    try:
        status = requests.get(srv.url + "/api/status", headers=srv.headers(), timeout=10).json()
        assert status["status"] == "degraded" and status["model"]["signed_by"] is None
        assert any("not signed" in r for r in status["degraded_reasons"])
    finally:
        srv.stop()


def test_a_signed_bundle_whose_model_does_not_reproduce_its_references_is_refused(bundle_copy, tmp_path, test_key):
    """Signed by a trusted key and internally consistent, yet the model computes something
    other than its author recorded: install runs it and refuses it, nothing changes."""
    key_path, public = test_key
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    fields = manifest["reference_outputs"]["fields"]
    name = "pro_b__WBC-Malignant-Pro-326.jpg"
    # each cell's class probabilities reversed: what a wrong model or runtime could give
    fields[name] = [list(reversed(row)) for row in fields[name]]
    resign(bundle_copy, key_path, reference_outputs=manifest["reference_outputs"])
    with pytest.raises(BundleError, match=f"cpu: on sample {name} the model gives"):
        install_bundle(bundle_copy, tmp_path / "state", Trust((public,)))
    assert not (tmp_path / "state" / "models" / "current").exists()
    assert [p for p in (tmp_path / "state" / "models").iterdir()] == []  # staging removed


class StandInEdgeTpu(CpuBackend):
    """Test double for the Coral Edge TPU (hardware that cannot exist here): the CPU model
    under the name "edgetpu", optionally adding a bias to every output."""

    name = "edgetpu"

    def __init__(self, model_path, bias: float = 0.0) -> None:
        super().__init__(model_path, 1)
        self.bias = bias

    def infer(self, original, segmented):
        out = super().infer(original, segmented)
        probabilities = out.probabilities.copy()
        probabilities[0] += self.bias
        return Inference(probabilities, out.embedding)


def _with_edgetpu_model(bundle_copy, key_path, tmp_path):
    compiled = tmp_path / "compiled.tflite"  # the CPU model stands in for a compiled one
    shutil.copyfile(bundle_copy / "model.tflite", compiled)
    return rewrite_bundle(bundle_copy, {EDGETPU_MODEL: compiled}, sign_key=key_path)


def test_install_checks_reference_outputs_on_each_backend_present(bundle_copy, tmp_path, test_key):
    key_path, public = test_key
    _with_edgetpu_model(bundle_copy, key_path, tmp_path)
    trust = Trust((public,))

    with pytest.raises(BundleError, match="edgetpu: on sample .* allowed 0.156"):
        install_bundle(bundle_copy, tmp_path / "a", trust, edgetpu_factory=lambda p: StandInEdgeTpu(p, bias=0.2))

    bundle, previous, checked = install_bundle(bundle_copy, tmp_path / "b", trust,
                                               edgetpu_factory=lambda p: StandInEdgeTpu(p, bias=0.01))
    assert previous is None and checked[0].startswith("cpu: 8 reference fields match")
    assert checked[1].startswith("edgetpu: 8 reference fields match (largest difference 0.0100")

    def absent(path):
        raise RuntimeError("Edge TPU delegate libedgetpu.so.1 could not be loaded")

    _, _, checked = install_bundle(bundle_copy, tmp_path / "c", trust, edgetpu_factory=absent)
    assert checked[1].startswith("edgetpu: not checked, no Edge TPU could be opened")


@pytest.mark.system
def test_keygen_and_sign_commands(tmp_path, bundle_copy):
    key = tmp_path / "k.pem"
    r = run_cli("blastscope-convert", "keygen", "--out", str(key))
    assert r.returncode == 0 and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    public = r.stdout.strip().splitlines()[-1]
    assert public.startswith("ed25519:")
    again = run_cli("blastscope-convert", "keygen", "--out", str(key))
    assert again.returncode == 2 and "already exists; a signing key is never overwritten" in again.stderr

    r = run_cli("blastscope-convert", "sign", str(bundle_copy), "--key", str(key))
    assert r.returncode == 0 and f"with key {key_id(public)}" in r.stdout
    assert load_bundle(bundle_copy, Trust((public,))).signer == public

    (bundle_copy / "model.tflite").write_bytes(b"changed")
    r = run_cli("blastscope-convert", "sign", str(bundle_copy), "--key", str(key))
    assert r.returncode == 2 and "model.tflite: sha256" in r.stderr  # never signs what does not verify
    r = run_cli("blastscope-convert", "sign", str(bundle_copy), "--key", str(tmp_path / "none.pem"))
    assert r.returncode == 2


def test_a_wrong_trusted_key_in_the_config_is_a_clear_error(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[inference]\ntrusted_keys = ["ed25519:short"]\n')
    r = run_cli("blastscope-edge", "classify", "--config", str(config), str(sample_paths()[0]))
    assert r.returncode == 2 and "inference.trusted_keys" in r.stderr and "Traceback" not in r.stderr



def test_a_revoked_key_is_refused_whatever_the_config_says_and_the_release_key_needs_no_config(bundle_copy, tmp_path, test_key):
    """Issue 36: the lost keys are revoked (shipped with the software), and a device's config adds
    keys to the release's instead of replacing them, so an upgraded device's old list does not
    stop it taking the current release's model."""
    from edge.device.config import load_config
    from edge.model.signing import REVOKED_KEYS

    assert RELEASE_KEY not in REVOKED_KEYS and len(REVOKED_KEYS) == 6
    old_config = load_config(None, environ={}, overrides={"inference.trusted_keys": list(REVOKED_KEYS[:3])})
    trust = old_config.trust  # 0.3.0's config listed its own keys only
    assert RELEASE_KEY in trust.keys and load_bundle(default_bundle_path(), trust).signer == RELEASE_KEY
    signed = resign(bundle_copy, test_key[0])
    with pytest.raises(BundleError, match="which is revoked"):
        load_bundle(signed, Trust((test_key[1],), revoked=(test_key[1],)))
    assert load_bundle(signed, Trust((test_key[1],))).signer == test_key[1]  # the same bundle, not revoked
