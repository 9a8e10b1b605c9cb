"""Raspberry Pi OS Bookworm is Debian 12: the device's install, proven on Debian 12.

- The pinned dependency set (deploy/constraints-bookworm.txt) agrees with the ``device``
  extra and keeps the system numpy 1.24 in a ``--system-site-packages`` venv, on this
  machine's Debian python3 (both runtimes installed: the maintained ai-edge-litert is chosen).
- A throwaway Debian 12 root (mmdebstrap from Debian's packages) gets the real offline
  install (``deploy/install.sh --offline`` with a tarball from ``make-offline-bundle.sh``),
  and the installed daemon runs there as the service user with the unit's own ExecStart.

What this cannot prove: ARM (the root is x86_64, the wheels are the x86_64 twins of the
pinned aarch64 ones), the real Pi camera (picamera2 is Raspberry Pi OS only; Debian's
python3-pywt, built against numpy 1.24's ABI, stands in for its simplejpeg) and the real
Edge TPU. Both tests need root, network access to Debian's and PyPI's mirrors, and skip
with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests
from packaging.requirements import Requirement

from conftest import ROOT, TOKEN, sample_paths

DEPLOY = ROOT / "deploy"
CONSTRAINTS = DEPLOY / "constraints-bookworm.txt"
SYSTEM_PYTHON = Path("/usr/bin/python3")
ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine(), "")


def normalize(name: str) -> str:
    """PEP 503 project name, as wheels and constraints spell it differently."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{CONSTRAINTS}: {line!r} is not an exact pin"
            pins[normalize(name.strip())] = version.strip()
    return pins


def _system_numpy() -> str | None:
    if not SYSTEM_PYTHON.exists():
        return None
    r = subprocess.run([str(SYSTEM_PYTHON), "-c", "import numpy; print(numpy.__version__)"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def test_constraints_pin_what_the_device_extra_allows():
    pins = _pins()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for spec in [*project, *extras["device"], *extras["tflite"]]:
        req = Requirement(spec)
        name = normalize(req.name)
        assert name in pins, f"{name} is not pinned in {CONSTRAINTS.name}"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} breaks {spec}"
    assert pins["numpy"].startswith("1.24.")  # Bookworm's own python3-numpy
    # install.sh and the tarball builder both apply the same file to the same extra
    for script in ("install.sh", "make-offline-bundle.sh"):
        text = (DEPLOY / script).read_text()
        assert "constraints-bookworm.txt" in text and "[device]" in text


@pytest.fixture(scope="module")
def system_numpy() -> str:
    version = _system_numpy()
    if version is None:
        pytest.skip(f"{SYSTEM_PYTHON} with Debian's python3-numpy is not installed (apt install python3-numpy)")
    if not version.startswith("1."):
        pytest.skip(f"{SYSTEM_PYTHON} has numpy {version}, not Debian 12's 1.24")
    return version


def test_system_site_venv_keeps_the_system_numpy(tmp_path, system_numpy, default_bundle):
    """The README's check: a venv made by /usr/bin/python3 -m venv --system-site-packages and
    filled under the constraints keeps numpy 1.24, imports cv2 and the runtimes, and a
    regular (non-editable) install classifies with the model it was given."""
    venv = tmp_path / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), f"{ROOT}[litert,tflite]"],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0 and ("NewConnectionError" in r.stderr or "No matching distribution" in r.stderr):
        pytest.skip(f"PyPI is unreachable from here: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    probe = subprocess.run([str(py), "-c", (
        "import json, numpy, cv2, edge\n"
        "from edge.model.runtime import interpreter_module\n"
        "print(json.dumps({'numpy': numpy.__version__, 'numpy_file': numpy.__file__, 'cv2': cv2.__version__,\n"
        "                  'runtime': interpreter_module()[1], 'edge': edge.__file__}))")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["numpy"] == system_numpy and found["numpy_file"].startswith("/usr/lib/python3/dist-packages/")
    assert found["cv2"].startswith("4.10.") and "site-packages" in found["edge"]
    # both runtimes present: the maintained one is taken (tflite-runtime 2.14 does not reproduce the
    # cell model's reference outputs; the install check refuses the bundle there)
    assert found["runtime"] == "ai-edge-litert"

    exe = venv / "bin" / "blastscope-edge"
    sample = next(p for p in sample_paths() if p.name.startswith("pro_b__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLASTSCOPE_")}
    none = subprocess.run([str(exe), "classify", "--state-dir", str(tmp_path / "state"), str(sample)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert none.returncode == 2 and "no model bundle found" in none.stderr and "Traceback" not in none.stderr
    inst = subprocess.run([str(exe), "model", "install", str(default_bundle), "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert inst.returncode == 0, inst.stderr
    # no --bundle: every command uses the installed model, as the daemon does
    out = subprocess.run([str(exe), "classify", "--json", "--state-dir", str(tmp_path / "state"), str(sample)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)["results"][0]
    assert result["label"] == "pro_b" and result["call"] == "positive"


def load_model_id(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["model_id"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _debian_root(dest: Path) -> None:
    tools = [t for t in ("mmdebstrap", "debootstrap") if shutil.which(t)]
    if os.geteuid() != 0:
        pytest.skip("building a Debian 12 root and chrooting into it needs root")
    if not tools:
        pytest.skip("neither mmdebstrap nor debootstrap is installed (apt install mmdebstrap)")
    if not ARCH:
        pytest.skip(f"no offline tarball for this machine's architecture {platform.machine()}")
    # openssl: install.sh checks the offline tarball's signature with it (Raspberry Pi OS has it)
    packages = "python3,python3-venv,python3-numpy,python3-systemd,python3-pywt,passwd,openssl"
    mirror = "http://deb.debian.org/debian"
    if tools[0] == "mmdebstrap":
        cmd = ["mmdebstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(dest), mirror]
    else:
        cmd = ["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(dest), mirror]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if r.returncode != 0 and re.search(r"Could not resolve|Failed to fetch|Temporary failure|unable to fetch", r.stderr):
        pytest.skip(f"Debian's mirror is unreachable: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]


def _in_root(root: Path, *cmd: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """Run in the Debian root with a clean environment (nothing of this machine's pip setup)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    return subprocess.run(["chroot", str(root), *cmd], capture_output=True, text=True, timeout=timeout, env=env, **kw)


@pytest.fixture(scope="module")
def debian12(tmp_path_factory):
    root = tmp_path_factory.mktemp("debian12") / "root"
    started = time.monotonic()
    _debian_root(root)
    proc = root / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        yield root, time.monotonic() - started
    finally:
        subprocess.run(["umount", "-l", str(proc)], check=False)
        if not os.path.ismount(proc):
            shutil.rmtree(root, ignore_errors=True)


def test_offline_install_on_debian12_runs_the_daemon_as_its_unit_does(debian12, tmp_path, test_key):
    root, build_s = debian12
    started = time.monotonic()
    out = tmp_path / "dist"
    r = subprocess.run(["bash", str(DEPLOY / "make-offline-bundle.sh"), "--arch", ARCH, "--out", str(out),
                        "--python", sys.executable, "--sign-key", str(test_key[0])],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0 and "NewConnectionError" in r.stderr:
        pytest.skip("PyPI is unreachable: the offline tarball cannot be built here")
    assert r.returncode == 0, r.stderr[-2000:]
    tarball = next(out.glob(f"blastscope-offline-*-{ARCH}.tar.gz"))
    shutil.copy(tarball, root / "root" / tarball.name)
    shutil.copy(f"{tarball}.sig", root / "root" / f"{tarball.name}.sig")
    shutil.copy(DEPLOY / "install.sh", root / "root" / "install.sh")

    # signed with the tests' key (the release key's private half is not here): trusted for this run
    inst = _in_root(root, "bash", "/root/install.sh", "--offline", f"/root/{tarball.name}", "--trusted-key",
                    test_key[1], timeout=900)
    assert inst.returncode == 0, inst.stdout[-3000:] + inst.stderr[-3000:]
    log = inst.stdout
    assert f"signature of /root/{tarball.name} verified (key {test_key[1]})" in log
    assert f"verified /root/{tarball.name}" in log
    assert "pip install --force-reinstall --no-deps --no-index" in log  # the project's own wheel, always
    # Raspberry Pi OS's own package is missing on Debian: said, not fatal; pycoral never asked for
    assert "note: python3-picamera2 is not installed and cannot be fetched offline; going on without it" in log
    assert "pycoral" not in log
    assert "note: systemd is not running here" in log
    assert "camera: picamera2 does not import here" in log and "inference: CPU (ai-edge-litert)" in log
    assert "installed model" in log

    # numpy in the service venv is Debian's 1.24, and a system module built against it imports beside it
    venv_py = "/opt/blastscope/current/venv/bin/python"
    probe = _in_root(root, venv_py, "-c", "import numpy, pywt, cv2; print(numpy.__version__, numpy.__file__, cv2.__version__)")
    assert probe.returncode == 0, probe.stderr
    version, where, cv2_version = probe.stdout.split()
    assert version.startswith("1.24.") and where.startswith("/usr/lib/python3/dist-packages/numpy")
    assert cv2_version.startswith("4.10.")
    pip_numpy = _in_root(root, venv_py, "-m", "pip", "list", "--local", "--format=json")
    assert "numpy" not in {p["name"].lower() for p in json.loads(pip_numpy.stdout)}  # pip added none of its own

    # a command without --bundle uses the installed model, as the service user
    sample = next(p for p in sample_paths() if p.name.startswith("pro_b__"))
    shutil.copy(sample, root / "tmp" / sample.name)
    cls = _in_root(root, "runuser", "-u", "blastscope", "--", "/opt/blastscope/current/venv/bin/blastscope-edge", "classify",
                   "--json", f"/tmp/{sample.name}", timeout=120)
    assert cls.returncode == 0, cls.stderr
    assert json.loads(cls.stdout)["results"][0]["label"] == "pro_b"

    # the unit's own ExecStart, as the unit's User, with the unit's Environment
    daemon = _Daemon(root)
    try:
        health = requests.get(f"{daemon.base}/healthz", timeout=10)
        assert health.json()["backend"] == "cpu"
        status = daemon.api("GET", "/api/status").json()
        assert status["camera"]["connected"] is False and "picamera2" in status["camera"]["error"]
        with open(sample, "rb") as f:
            res = daemon.api("POST", "/api/classify", files={"image": (sample.name, f, "image/jpeg")})
        assert res.status_code == 200, res.text
        assert res.json()["label"] == "pro_b" and res.json()["call"] == "positive"
    finally:
        daemon.stop()
    print(f"Debian 12 root built in {build_s:.0f} s; tarball, install and daemon checks in "
          f"{time.monotonic() - started:.0f} s")


#: The last commit of release 0.3.0 (edge/__init__.py), the release before the versioned
#: folders and before the district outbox's migration: the upgrade test's "older tag".
OLDER_RELEASE = "d1962ed654"


class _Daemon:
    """The installed unit's own ExecStart in the Debian root, as its User, until stopped."""

    def __init__(self, root: Path):
        unit = (root / "etc/systemd/system/blastscope.service").read_text()
        exec_start = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1).split()
        user = re.search(r"^User=(.+)$", unit, re.M).group(1)
        unit_env = re.findall(r"^Environment=(.+)$", unit, re.M)
        port = _free_port()
        env_args = ["env", *unit_env, f"BLASTSCOPE_PORT={port}", f"BLASTSCOPE_TOKEN={TOKEN}",
                    "STATE_DIRECTORY=/var/lib/blastscope"]
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(["chroot", str(root), "runuser", "-u", user, "--", *env_args, *exec_start],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if requests.get(f"{self.base}/healthz", timeout=10).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.5)
        self.stop()
        raise AssertionError(f"the daemon did not come up: {self.proc.stdout.read()[-3000:] if self.proc.stdout else ''}")

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"{self.base}{path}", headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=60, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _offline_tarball(source: Path, out: Path, key: Path) -> Path:
    r = subprocess.run(["bash", str(source / "deploy/make-offline-bundle.sh"), "--arch", ARCH, "--out", str(out),
                        "--python", sys.executable, "--sign-key", str(key)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0 and "NewConnectionError" in r.stderr:
        pytest.skip("PyPI is unreachable: the offline tarball cannot be built here")
    assert r.returncode == 0, r.stderr[-2000:]
    return next(out.glob(f"blastscope-offline-*-{ARCH}.tar.gz"))


def _install_in(root: Path, tarball: Path, installer: Path, key: str) -> str:
    for path in (tarball, Path(f"{tarball}.sig")):
        shutil.copy(path, root / "root" / path.name)
    shutil.copy(installer, root / "root" / "install.sh")
    inst = _in_root(root, "bash", "/root/install.sh", "--offline", f"/root/{tarball.name}", "--trusted-key", key,
                    timeout=900)
    assert inst.returncode == 0, inst.stdout[-3000:] + inst.stderr[-3000:]
    return inst.stdout


def _case(daemon: _Daemon, code: str) -> dict:
    cases = daemon.api("GET", "/api/cases?limit=50").json()
    rows = cases["cases"] if isinstance(cases, dict) else cases
    found = [c for c in rows if c["code"] == code]
    assert len(found) == 1, rows
    return daemon.api("GET", f"/api/cases/{found[0]['id']}").json()


def test_upgrade_from_an_older_release_rolls_back_and_upgrades_again_on_real_state(debian12, tmp_path, test_key):
    """Issue 36: the older release (0.3.0) installed, with real cases and users; the current
    release over it (the record migrated, copied first); deploy/rollback.sh back to 0.3.0 with
    the record as it was (the field read since set aside, kept), the old daemon serving it; the
    current release again. Needs the repository's history for 0.3.0's source."""
    root, _ = debian12
    older = tmp_path / "older"
    older.mkdir()
    archive = subprocess.run(f"git -C {ROOT} archive {OLDER_RELEASE} | tar -x -C {older}", shell=True,
                             capture_output=True, text=True)
    if archive.returncode != 0:
        pytest.skip(f"release 0.3.0's source ({OLDER_RELEASE}) is not in this clone's history: {archive.stderr[-200:]}")
    for path in ("opt/blastscope", "var/lib/blastscope", "etc/blastscope"):  # a device that never had BlastScope
        shutil.rmtree(root / path, ignore_errors=True)
    old_tar = _offline_tarball(older, tmp_path / "dist-old", test_key[0])
    new_tar = _offline_tarball(ROOT, tmp_path / "dist-new", test_key[0])
    sample = next(p for p in sample_paths() if p.name.startswith("pro_b__"))
    benign = next(p for p in sample_paths() if p.name.startswith("benign__"))

    # 0.3.0, its daemon, a user and a case with one field
    log = _install_in(root, old_tar, older / "deploy/install.sh", test_key[1])
    assert (root / "opt/blastscope/venv/bin/blastscope-edge").exists() and not (root / "opt/blastscope/current").exists()
    daemon = _Daemon(root)
    try:
        assert daemon.api("GET", "/api/status").json()["version"] == "0.3.0"
        assert daemon.api("POST", "/api/users", json={"name": "Tess", "role": "technician", "pin": "739164"}).ok
        case = daemon.api("POST", "/api/cases", json={"code": "UPG-1", "note": "before the upgrade"}).json()
        with open(sample, "rb") as f:
            assert daemon.api("POST", f"/api/cases/{case['id']}/classify", files={"image": (sample.name, f)}).ok
    finally:
        daemon.stop()

    # the current release over it: adopted, switched, the record copied before its migration
    log = _install_in(root, new_tar, DEPLOY / "install.sh", test_key[1])
    assert "adopted the release installed in /opt/blastscope/venv as 0.3.0-legacy" in log
    opt, state = root / "opt/blastscope", root / "var/lib/blastscope"
    assert os.readlink(opt / "previous") == "releases/0.3.0-legacy"
    daemon = _Daemon(root)
    try:
        import edge
        assert daemon.api("GET", "/api/status").json()["version"] == edge.__version__
        upgraded = _case(daemon, "UPG-1")
        assert len(upgraded["fields"]) == 1
        assert "Tess" in {u["name"] for u in daemon.api("GET", "/api/users").json()["users"]}
        with open(benign, "rb") as f:  # a field read after the upgrade
            assert daemon.api("POST", f"/api/cases/{upgraded['id']}/classify", files={"image": (benign.name, f)}).ok
    finally:
        daemon.stop()
    assert list(state.glob("results.db.before-schema-*")), sorted(p.name for p in state.iterdir())

    # back to 0.3.0: its software, its record as it was, the later field kept aside
    back = _in_root(root, "bash", "/opt/blastscope/current/deploy/rollback.sh", timeout=300)
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
    assert "going back from" in back.stdout and "to 0.3.0 (0.3.0-legacy)" in back.stdout
    assert os.readlink(opt / "current") == "releases/0.3.0-legacy"
    aside = list(state.glob("results.db.rolled-back-*"))
    assert len([p for p in aside if not p.name.endswith(("-wal", "-shm"))]) == 1
    daemon = _Daemon(root)  # no "schema newer than this software": it serves
    try:
        assert daemon.api("GET", "/api/status").json()["version"] == "0.3.0"
        assert len(_case(daemon, "UPG-1")["fields"]) == 1  # as before the upgrade
        assert "Tess" in {u["name"] for u in daemon.api("GET", "/api/users").json()["users"]}
    finally:
        daemon.stop()

    # and the current release again
    log = _install_in(root, new_tar, DEPLOY / "install.sh", test_key[1])
    daemon = _Daemon(root)
    try:
        assert daemon.api("GET", "/api/status").json()["version"] == edge.__version__
        again = _case(daemon, "UPG-1")
        assert len(again["fields"]) == 1 and again["note"] == "before the upgrade"
        assert "Tess" in {u["name"] for u in daemon.api("GET", "/api/users").json()["users"]}
        assert daemon.api("GET", "/api/status").json()["model"]["id"] == load_model_id(ROOT / "models/default")
    finally:
        daemon.stop()
