"""The Edge TPU in a child process: a native crash in Coral's stack means CPU and a degraded
status, never a dead daemon.

No Edge TPU can exist here. Two TEST DOUBLES stand in for Coral's software: a
``libedgetpu.so.1`` that raises SIGSEGV when loaded (tests/standins/libedgetpu-crash, built
with the system C compiler), and a ``pycoral`` whose ``make_interpreter`` returns the CPU
interpreter (tests/standins/pycoral), so that the child-process path runs real inference."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests

from edge.analysis.cells import model_inputs
from edge.model.bundle import EDGETPU_MODEL, load_bundle
from edge.model.edgetpu_process import EdgeTpuProcess
from edge.model.inference import BackendManager, CpuBackend, InferenceError

from conftest import ROOT, ServerProcess, sample_paths

STANDINS = ROOT / "tests" / "standins"


@pytest.fixture(scope="module")
def crashing_libedgetpu(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here to build the crashing libedgetpu.so.1 stand-in")
    folder = tmp_path_factory.mktemp("libedgetpu")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(folder / "libedgetpu.so.1"),
                    str(STANDINS / "libedgetpu-crash" / "crash.c")], check=True, capture_output=True)
    return folder


def _cell_pair(bundle) -> tuple[np.ndarray, np.ndarray]:
    from edge.analysis.cells import cut_cells, detect_cells, measure_magnification, working_scale
    from edge.analysis.imagefile import read_rgb
    from edge.analysis.normalisation import normalise
    from edge.analysis.segmentation import segment

    field = normalise(read_rgb(sample_paths()[4])).rgb
    seg = segment(field, bundle.segmentation)
    px_per_um, _ = working_scale(measure_magnification(field, seg.mask, seg.element), bundle.cells)
    cells, labels = detect_cells(seg, px_per_um, bundle.cells)
    first, second = model_inputs(cut_cells(field, labels, cells, px_per_um, bundle.cells, seg.element))
    return first[0], second[0]


def test_a_libedgetpu_that_segfaults_is_an_error_here_not_a_crash(crashing_libedgetpu, default_bundle, monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", str(crashing_libedgetpu))
    with pytest.raises(InferenceError, match="died while opening the Edge TPU \\(killed by SIGSEGV\\)"):
        EdgeTpuProcess(load_bundle(default_bundle).cpu_model)
    manager = BackendManager(load_bundle(default_bundle).cpu_model, load_bundle(default_bundle).cpu_model,
                             edgetpu_factory=EdgeTpuProcess)  # the CPU model stands in for a compiled one
    assert manager.name == "cpu" and "killed by SIGSEGV" in manager.degraded


def test_the_child_runs_the_model_and_its_death_mid_run_falls_back_to_the_cpu(default_bundle, monkeypatch):
    monkeypatch.syspath_prepend(str(STANDINS))  # a spawned child starts with the parent's sys.path
    bundle = load_bundle(default_bundle)
    first, second = _cell_pair(bundle)
    cpu = CpuBackend(bundle.cpu_model, 1).infer(first, second)
    manager = BackendManager(bundle.cpu_model, bundle.cpu_model, edgetpu_factory=EdgeTpuProcess, reprobe_s=3600)
    try:
        assert manager.name == "edgetpu" and manager.degraded is None
        out, backend, _ = manager.infer(first, second)
        assert backend == "edgetpu"
        assert np.allclose(out.probabilities, cpu.probabilities) and np.allclose(out.embedding, cpu.embedding)
        os.kill(manager.tpu.pid, signal.SIGSEGV)  # what a native fault does to the child
        out, backend, _ = manager.infer(first, second)
        assert backend == "cpu" and np.allclose(out.probabilities, cpu.probabilities)
        assert "Edge TPU failed mid-run" in manager.degraded and "SIGSEGV" in manager.degraded
    finally:
        if manager.tpu is not None:
            manager.tpu.close()


def test_a_batch_goes_to_the_child_through_shared_memory_and_reads_as_on_the_cpu(default_bundle, monkeypatch):
    """Issue 36: the input pairs were pickled through the pipe, one round trip a view. Now up to
    eight pairs go through one shared block and one round trip; the outputs are the CPU's, the
    manager counts an invocation a pair (the compiled model is batch 1), and the block is gone
    from /dev/shm once the child is closed."""
    monkeypatch.syspath_prepend(str(STANDINS))
    bundle = load_bundle(default_bundle)
    first, second = _cell_pair(bundle)
    from edge.model.views import DIHEDRAL, oriented

    firsts = np.stack([oriented(first, k) for k in range(DIHEDRAL)] * 2)[:11]  # more than one block's worth
    seconds = np.stack([oriented(second, k) for k in range(DIHEDRAL)] * 2)[:11]
    cpu = CpuBackend(bundle.cpu_model, 1)
    manager = BackendManager(bundle.cpu_model, bundle.cpu_model, edgetpu_factory=EdgeTpuProcess, reprobe_s=3600)
    try:
        assert manager.name == "edgetpu"
        outs, backend, _ = manager.infer_views(firsts, seconds)
        assert backend == "edgetpu" and len(outs) == 11 and manager.speed["edgetpu"].fields == 11
        for out, a, b in zip(outs, firsts, seconds):
            want = cpu.infer(a, b)
            assert np.allclose(out.probabilities, want.probabilities) and np.allclose(out.embedding, want.embedding)
        name = manager.tpu.shared_block
        assert Path(f"/dev/shm/{name}").exists()
    finally:
        if manager.tpu is not None:
            manager.tpu.close()
    assert not Path(f"/dev/shm/{name}").exists()


@pytest.mark.system
def test_the_daemon_serves_on_the_cpu_when_libedgetpu_crashes(crashing_libedgetpu, tmp_path, default_bundle, test_key):
    """The issue's daemon exited 139 before serving and systemd restarted it in a loop."""
    from converter.bundle import rewrite_bundle

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(default_bundle, bundle_dir)
    compiled = tmp_path / "compiled.tflite"  # the CPU model stands in for a compiled one
    shutil.copyfile(bundle_dir / "model.tflite", compiled)
    rewrite_bundle(bundle_dir, {EDGETPU_MODEL: compiled}, sign_key=test_key[0])
    config = tmp_path / "config.toml"
    config.write_text(f'[inference]\ntrusted_keys = ["{test_key[1]}"]\nbackend = "auto"\nbundle = "{bundle_dir}"\n'
                      f'[camera]\nsource = "replay:{ROOT / "edge" / "samples"}"\n')
    server = ServerProcess(tmp_path / "state", "--config", str(config),
                           env={"LD_LIBRARY_PATH": str(crashing_libedgetpu)})
    try:
        status = requests.get(f"{server.url}/api/status", headers=server.headers(), timeout=10).json()
        assert status["backend"]["active"] == "cpu" and status["status"] == "degraded"
        assert any("killed by SIGSEGV" in r for r in status["degraded_reasons"]), status["degraded_reasons"]
        sample = sample_paths()[4]
        r = requests.post(f"{server.url}/api/classify", files={"image": (sample.name, sample.read_bytes())},
                          headers=server.headers(), timeout=60)
        assert r.status_code == 200 and r.json()["backend"] == "cpu"
    finally:
        assert server.stop() == 0
