"""Deployment: install.sh into a staging root, the offline tarball, the systemd unit, the
scripts' shellcheck, and model install / refuse / rollback on real bundles."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import edge
from edge.model.bundle import load_bundle
from edge.device.config import load_config

from conftest import ROOT, resign, run_cli

DEPLOY = ROOT / "deploy"


def _install(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DEPLOY / "install.sh"), *args], capture_output=True, text=True, timeout=120)


def test_dry_run_writes_nothing_and_lists_every_step(tmp_path):
    r = _install("--dry-run", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []
    out = r.stdout
    # what this machine's apt sources offer is installed; what they lack (python3-picamera2 on plain
    # Debian) is said, never fatal
    assert "would run: apt-get install -y python3-venv python3-numpy" in out
    if "note: python3-picamera2 is not available" not in out:
        assert "python3-picamera2 python3-systemd" in out
    assert "would run: useradd --system --home-dir /var/lib/blastscope --shell /usr/sbin/nologin --groups video,plugdev blastscope" in out
    # each release in its own folder: /opt/blastscope/releases/VERSION-TIME/venv
    venv = re.search(rf"would run: /usr/bin/python3 -m venv --system-site-packages ({tmp_path}/opt/blastscope/releases/"
                     rf"{re.escape(edge.__version__)}-\d{{8}}T\d{{6}}Z/venv)", out)
    assert venv, out
    assert f"--constraint {ROOT}/deploy/constraints-bookworm.txt {ROOT}[device]" in out
    # and the project itself again whatever its version (pip keeps a same-version install)
    assert f"{venv.group(1)}/bin/pip install --force-reinstall --no-deps {ROOT}" in out
    assert f"would run: mv -T {tmp_path}/opt/blastscope/.current.new {tmp_path}/opt/blastscope/current" in out
    assert "would run: systemctl enable blastscope.service" in out


def test_staging_root_install_creates_files_and_keeps_config_on_upgrade(tmp_path):
    r = _install("--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    unit = tmp_path / "etc/systemd/system/blastscope.service"
    assert unit.read_text() == (DEPLOY / "blastscope.service").read_text()
    config = tmp_path / "etc/blastscope/config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    cfg = load_config(config, environ={})
    assert str(cfg.state_dir) == "/var/lib/blastscope" and cfg.server.port == 8080
    assert (tmp_path / "etc/udev/rules.d/99-coral-edgetpu.rules").read_text().count('GROUP="plugdev"') == 2
    assert "_http._tcp" in (tmp_path / "etc/avahi/services/blastscope.service").read_text()
    clock_rule = (tmp_path / "etc/polkit-1/rules.d/50-blastscope-clock.rules").read_text()
    assert '"org.freedesktop.timedate1.set-time"' in clock_rule and 'subject.user == "blastscope"' in clock_rule
    assert load_bundle(tmp_path / "opt/blastscope/current/models/default").model_id
    assert (tmp_path / "var/lib/blastscope").is_dir()
    assert "model install" in r.stdout and "note: Coral's apt repository is not configured" in r.stdout

    config.write_text(config.read_text().replace("port = 8080", "port = 9000"))
    again = _install("--root", str(tmp_path))
    assert again.returncode == 0 and f"kept {config}" in again.stdout
    assert load_config(config, environ={}).server.port == 9000
    avahi = (tmp_path / "etc/avahi/services/blastscope.service").read_text()
    assert "<port>9000</port>" in avahi and "8080" not in avahi.split("<port>")[1]  # announces the config's port


def test_coral_packages_when_its_repository_is_configured(tmp_path):
    lists = tmp_path / "etc/apt/sources.list.d"
    lists.mkdir(parents=True)
    (lists / "coral-edgetpu.list").write_text("deb https://packages.cloud.google.com/apt coral-edgetpu-stable main\n")
    r = _install("--dry-run", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    # pycoral exists only for Python < 3.10: never asked for; libedgetpu1-std is, and its absence
    # from the apt sources (as here) is reported without aborting
    assert "pycoral" not in r.stdout
    assert ("libedgetpu1-std" in r.stdout.split("apt-get install", 1)[-1].splitlines()[0]
            or "note: libedgetpu1-std is not available from this system's apt sources; going on without it" in r.stdout)


@pytest.fixture(scope="module")
def offline_tarball(tmp_path_factory, test_key):
    """Built and signed with the tests' key (the release key's private half is not here);
    installs below trust it with --trusted-key."""
    out = tmp_path_factory.mktemp("offline")
    r = subprocess.run(["bash", str(DEPLOY / "make-offline-bundle.sh"), "--out", str(out), "--python", sys.executable,
                        "--sign-key", str(test_key[0])], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and ("ConnectionError" in r.stderr or "NewConnectionError" in r.stderr):
        pytest.skip("the package index is unreachable: the offline tarball cannot be built here")
    assert r.returncode == 0, r.stderr[-2000:]
    return next(out.glob("blastscope-offline-*-aarch64.tar.gz"))


def test_offline_tarball_is_complete_for_the_pi(offline_tarball, tmp_path):
    with tarfile.open(offline_tarball) as tar:
        tar.extractall(tmp_path, filter="data")
    bundle = tmp_path / "blastscope-offline"
    names = {p.name for p in (bundle / "wheels").iterdir()}
    assert any(n.startswith("blastscope-") for n in names)
    assert any(n.startswith("ai_edge_litert-") and "aarch64" in n for n in names)
    # exactly the pinned versions, each covered by SHA256SUMS
    from test_bookworm import _pins, normalize

    pins = _pins()
    for wheel in names - {n for n in names if n.startswith("blastscope-")}:
        name, version = wheel.split("-")[:2]
        assert pins[normalize(name)] == version, wheel
    sums = (bundle / "SHA256SUMS").read_text()
    assert all(f"./wheels/{n}" in sums for n in names)
    assert load_bundle(bundle / "models/default").model_id
    # every requirement of blastscope[litert] resolves from the wheels alone, for aarch64/CPython 3.11
    # (Bookworm's glibc 2.36 accepts manylinux 2.17 to 2.28 wheels)
    platforms = [a for p in ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
                 for a in ("--platform", p)]  # and the constraints, as install.sh applies them
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links",
                        str(bundle / "wheels"), "--only-binary=:all:", *platforms, "--python-version", "3.11",
                        "--implementation", "cp", "--target", str(tmp_path / "t"),
                        "-c", str(bundle / "deploy" / "constraints-bookworm.txt"), "blastscope[device]"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Would install" in r.stdout and "ai-edge-litert" in r.stdout.replace("_", "-")


def _sign(tarball: Path, key: Path) -> None:
    """Sign a tarball the way make-offline-bundle.sh does: its sha256, Ed25519, base64."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    digest = hashlib.sha256(tarball.read_bytes()).hexdigest().encode()
    signature = load_pem_private_key(key.read_bytes(), None).sign(digest)
    Path(f"{tarball}.sig").write_text(base64.b64encode(signature).decode())


def _repack(offline_tarball: Path, tmp_path: Path, change) -> Path:
    unpacked = tmp_path / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(offline_tarball) as tar:
        tar.extractall(unpacked, filter="data")
    change(unpacked / "blastscope-offline")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(unpacked / "blastscope-offline", arcname="blastscope-offline")
    return bad


def test_offline_install_verifies_the_signature_before_extracting_then_every_file(offline_tarball, tmp_path, test_key):
    trusted = ("--trusted-key", test_key[1])
    good = _install("--offline", str(offline_tarball), *trusted, "--root", str(tmp_path / "ok"))
    assert good.returncode == 0, good.stderr
    assert f"signature of {offline_tarball} verified (key {test_key[1]})" in good.stdout
    assert f"verified {offline_tarball}" in good.stdout
    assert "--no-index --find-links" in good.stdout and "apt-get install" not in good.stdout
    assert (tmp_path / "ok/etc/systemd/system/blastscope.service").exists()

    # the release keys alone do not trust the tests' key: refused before extraction
    untrusted = _install("--offline", str(offline_tarball), "--root", str(tmp_path / "no"))
    assert untrusted.returncode == 2 and "not signed by a trusted key" in untrusted.stderr
    dry = _install("--offline", str(offline_tarball), *trusted, "--dry-run", "--root", str(tmp_path / "dry"))
    assert dry.returncode == 0 and "would extract" in dry.stdout and f"verified {offline_tarball}\n" not in dry.stdout

    def tamper_card(root: Path) -> None:
        card = root / "models/default/MODEL_CARD.md"
        card.write_text(card.read_text() + "\ntampered\n")

    # rebuilt with the old signature: the tarball is not the one signed
    bad = _repack(offline_tarball, tmp_path, tamper_card)
    shutil.copyfile(f"{offline_tarball}.sig", f"{bad}.sig")
    refused = _install("--offline", str(bad), *trusted, "--root", str(tmp_path / "no"))
    assert refused.returncode == 2 and "changed since it was signed" in refused.stderr
    # signed by the attacker's own key (the rebuilt tarball with an unlisted wheel)
    attacker = tmp_path / "attacker.pem"
    from edge.model.signing import generate_key

    generate_key(attacker)
    bad = _repack(offline_tarball, tmp_path, lambda root: (root / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x"))
    _sign(bad, attacker)
    refused = _install("--offline", str(bad), *trusted, "--root", str(tmp_path / "no"))
    assert refused.returncode == 2 and "not signed by a trusted key" in refused.stderr
    # a trusted signer's tarball is still checked inside: unlisted files, links, checksums
    _sign(bad, test_key[0])
    refused = _install("--offline", str(bad), *trusted, "--root", str(tmp_path / "no"))
    assert refused.returncode == 2 and "files SHA256SUMS does not list" in refused.stderr and "evil-1.0" in refused.stderr
    bad = _repack(offline_tarball, tmp_path, lambda root: os.symlink("/etc/shadow", root / "models/default/link"))
    _sign(bad, test_key[0])
    refused = _install("--offline", str(bad), *trusted, "--root", str(tmp_path / "no"))
    assert refused.returncode == 2 and "holds links or special files" in refused.stderr
    bad = _repack(offline_tarball, tmp_path, tamper_card)
    _sign(bad, test_key[0])
    refused = _install("--offline", str(bad), *trusted, "--root", str(tmp_path / "no"))
    assert refused.returncode == 2 and "checksum mismatch, nothing installed" in refused.stderr
    Path(f"{bad}.sig").unlink()
    refused = _install("--offline", str(bad), *trusted, "--root", str(tmp_path / "no"))
    assert refused.returncode == 2 and "no signature beside the tarball" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_the_installers_pinned_keys_are_the_release_keys():
    import re

    from edge.model.signing import RELEASE_KEYS

    script = (DEPLOY / "install.sh").read_text()
    block = script[script.index("RELEASE_KEYS=("):script.index(")", script.index("RELEASE_KEYS=("))]
    assert tuple(re.findall(r'"(ed25519:[^"]+)"', block)) == RELEASE_KEYS
    from edge.model.signing import REVOKED_KEYS

    block = script[script.index("REVOKED_KEYS=("):script.index(")", script.index("REVOKED_KEYS=("))]
    assert tuple(re.findall(r'"(ed25519:[^"]+)"', block)) == REVOKED_KEYS


def test_a_tarball_signed_by_a_revoked_key_is_refused_even_when_trusted(offline_tarball, tmp_path, test_key):
    """Issue 36: lost keys stayed trusted. A key on the revocation list (here the tests' own key,
    revoked on the command line as a device admin would revoke a key known lost before the next
    release ships it) is refused even when also given as trusted."""
    refused = _install("--offline", str(offline_tarball), "--trusted-key", test_key[1], "--revoked-key", test_key[1],
                       "--root", str(tmp_path / "no"))
    assert refused.returncode == 2 and "not signed by a trusted key" in refused.stderr
    assert not (tmp_path / "no").exists()


def test_staging_never_changes_modes_through_a_link(tmp_path):
    """The issue's case: the bundle folder is a link to a folder outside the stage (cp -R copies
    the link as a link); the install's mode change must not reach what it points at (a 0600
    key there stayed 0600), and links inside the folder are not followed either."""
    source = tmp_path / "src"
    shutil.copytree(DEPLOY, source / "deploy")
    shutil.copyfile(ROOT / "README.md", source / "README.md")
    outside = tmp_path / "outside"
    shutil.copytree(ROOT / "models/default", outside)
    secret = outside / "key.pem"
    secret.write_text("private")
    secret.chmod(0o600)
    (source / "models").mkdir()
    (source / "models/default").symlink_to(outside)
    r = subprocess.run(["bash", str(source / "deploy/install.sh"), "--root", str(tmp_path / "stage")],
                       capture_output=True, text=True, timeout=120)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600, r.stdout
    # a regular bundle folder with a link inside it
    (source / "models/default").unlink()
    shutil.copytree(ROOT / "models/default", source / "models/default")
    (source / "models/default/key.pem").symlink_to(secret)
    r = subprocess.run(["bash", str(source / "deploy/install.sh"), "--root", str(tmp_path / "stage2")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "stage2/opt/blastscope/current/models/default/model.tflite").stat().st_mode) == 0o644


def test_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    # The only change: ExecStart points at this environment's blastscope-edge, since verify
    # requires the executable to exist and /opt/blastscope is not installed here.
    exe = Path(sys.executable).parent / "blastscope-edge"
    unit = tmp_path / "blastscope.service"
    unit.write_text((DEPLOY / "blastscope.service").read_text().replace("/opt/blastscope/current/venv/bin/blastscope-edge", str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=blastscope", "StateDirectory=blastscope",
                 "ConfigurationDirectory=blastscope", "ProtectSystem=strict", "ProtectHome=true", "PrivateTmp=true",
                 "NoNewPrivileges=true", "DevicePolicy=closed", "DeviceAllow=char-usb_device rw"):
        assert line in text


def test_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    scripts = [DEPLOY / "install.sh", DEPLOY / "make-offline-bundle.sh", ROOT / ".ci" / "run",
               ROOT / "tests" / "standins" / "edgetpu_compiler"]
    r = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def _variant(default_bundle: Path, dest: Path, description: str, key: Path) -> Path:
    """The same network re-serialised with another description: a second, genuinely
    different, runnable bundle (new model.tflite bytes, new sha256, new model id), signed."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from converter.bundle import rewrite_bundle

    shutil.copytree(default_bundle, dest)
    model = schema.ModelT.InitFromPackedBuf((dest / "model.tflite").read_bytes(), 0)
    model.description = description.encode()
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    (dest / "model.tflite").write_bytes(bytes(builder.Output()))
    return rewrite_bundle(dest, sign_key=key)


def test_model_install_refuse_and_rollback(tmp_path, default_bundle, test_key, trusting_config):
    from edge.model.signing import Trust

    state = tmp_path / "state"
    cli = ("--state-dir", str(state), "--config", str(trusting_config))
    first = load_bundle(default_bundle).model_id
    second_dir = _variant(default_bundle, tmp_path / "usb" / "bundle", "retrained", test_key[0])
    second = load_bundle(second_dir, Trust((test_key[1],))).model_id
    assert second != first

    r = run_cli("blastscope-edge", "model", "install", str(default_bundle), *cli)
    assert r.returncode == 0 and f"installed model {first}, signed by key" in r.stdout and "(previous: none)" in r.stdout
    assert "reference outputs cpu: 8 reference fields match" in r.stdout
    r = run_cli("blastscope-edge", "model", "install", str(second_dir), *cli)
    assert r.returncode == 0 and f"installed model {second}, signed by key" in r.stdout and f"(previous: {first})" in r.stdout
    assert load_config(None, environ={}, overrides={"store.state_dir": str(state)}).bundle_path.resolve() == \
        (state / "models" / second).resolve()

    broken = tmp_path / "broken"
    shutil.copytree(second_dir, broken)
    (broken / "model.tflite").write_bytes(b"\0" * 64)
    r = run_cli("blastscope-edge", "model", "install", str(broken), *cli)
    assert r.returncode == 2 and "does not match the manifest" in r.stderr

    unrunnable = tmp_path / "unrunnable"  # signed by a trusted key, hashes right, model broken
    shutil.copytree(default_bundle, unrunnable)
    (unrunnable / "model.tflite").write_bytes(b"TFL3 not really a model")
    resign(unrunnable, test_key[0], release=load_bundle(second_dir, Trust((test_key[1],))).release + 1)  # newer: not a downgrade
    r = run_cli("blastscope-edge", "model", "install", str(unrunnable), *cli)
    assert r.returncode == 2 and "the model does not reproduce its reference outputs" in r.stderr
    assert os.readlink(state / "models" / "current") == second  # the running model stayed
    assert sorted(p.name for p in (state / "models").iterdir() if not p.name.startswith(".")) == \
        sorted([first, second, "current", "previous"])

    r = run_cli("blastscope-edge", "model", "rollback", *cli)
    assert r.returncode == 0 and f"rolled back to model {first} (replaced {second})" in r.stdout
    assert os.readlink(state / "models" / "current") == first
    assert os.readlink(state / "models" / "previous") == second


def test_a_tarball_swapped_after_its_signature_is_checked_is_not_what_gets_installed(offline_tarball, tmp_path, test_key):
    """Issue 36, check then use: the installer hashed the tarball to check its signature, then
    read the path again to unpack it, so a file swapped in between (an attacker's tarball with a
    consistent SHA256SUMS) was installed. Here ``sha256sum`` swaps the given path right after
    the signature's hash is taken, every time: what is installed is still the signed tarball."""
    def evil_card(root: Path) -> None:
        card = root / "models/default/MODEL_CARD.md"
        card.write_text(card.read_text() + "\nswapped in after the check\n")
        sums = [line for line in (root / "SHA256SUMS").read_text().splitlines() if not line.endswith("MODEL_CARD.md")]
        import hashlib
        digest = hashlib.sha256(card.read_bytes()).hexdigest()
        (root / "SHA256SUMS").write_text("\n".join(sums + [f"{digest}  ./models/default/MODEL_CARD.md"]) + "\n")

    given = tmp_path / "given.tar.gz"
    shutil.copyfile(offline_tarball, given)
    shutil.copyfile(f"{offline_tarball}.sig", f"{given}.sig")
    evil = _repack(offline_tarball, tmp_path, evil_card)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sha256sum").write_text(f'#!/bin/sh\n/usr/bin/sha256sum "$@"\nstatus=$?\ncp "{evil}" "{given}"\nexit $status\n')
    (shim / "sha256sum").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--offline", str(given), "--trusted-key", test_key[1],
                        "--root", str(tmp_path / "root")], capture_output=True, text=True, timeout=120, env=env)
    assert given.read_bytes() == evil.read_bytes()  # the swap happened
    installed = list((tmp_path / "root").rglob("MODEL_CARD.md"))
    assert r.returncode == 0 and installed, r.stderr
    assert all("swapped in after the check" not in p.read_text() for p in installed)


def test_an_older_release_is_refused_over_a_newer_one_unless_asked(tmp_path):
    """Issue 36: every release was 0.3.0 and an older, validly signed release installed over a
    newer one. The installer writes the release's version and refuses an older one."""

    root = tmp_path / "root"
    first = _install("--root", str(root))
    assert first.returncode == 0, first.stderr
    assert (root / "opt/blastscope/current/VERSION").read_text().strip() == edge.__version__
    assert f"release {edge.__version__}" in first.stdout
    (root / "opt/blastscope/current/VERSION").write_text("99.0.0\n")  # as if a newer release were installed
    older = _install("--root", str(root))
    assert older.returncode == 2 and f"release {edge.__version__} is older than the installed 99.0.0" in older.stderr
    assert (root / "opt/blastscope/current/VERSION").read_text().strip() == "99.0.0"  # nothing installed
    back = _install("--root", str(root), "--allow-downgrade")
    assert back.returncode == 0 and "going back from 99.0.0" in back.stdout
    assert (root / "opt/blastscope/current/VERSION").read_text().strip() == edge.__version__


def test_each_release_gets_its_own_folder_switched_by_one_link_and_rollback_goes_back(tmp_path):
    """Issue 36: the venv was upgraded in place, so nothing could go back. A device installed
    before the versioned folders (software in /opt/blastscope/venv) is adopted as a release; each
    install is a new folder switched in by ``current``, the one before kept as ``previous``,
    older ones removed; ``rollback.sh`` switches back (here on a staging root: no systemd, no
    record migrated, no model installed, so only the switch; the chroot test does the rest)."""
    root = tmp_path / "root"
    opt = root / "opt/blastscope"
    (opt / "venv/bin").mkdir(parents=True)  # as 0.3.0 left it
    (opt / "VERSION").write_text("0.3.0\n")
    first = _install("--root", str(root))
    assert first.returncode == 0, first.stderr
    assert "adopted the release installed in" in first.stdout
    assert os.readlink(opt / "previous") == "releases/0.3.0-legacy"
    assert os.readlink(opt / "releases/0.3.0-legacy/venv") == "../../venv"
    new = os.readlink(opt / "current")
    assert re.fullmatch(rf"releases/{re.escape(edge.__version__)}-\d{{8}}T\d{{6}}Z(-\d+)?", new), new
    assert (opt / new / "VERSION").read_text().strip() == edge.__version__
    assert (opt / new / "INSTALLED").exists() and (opt / new / "deploy/rollback.sh").exists()

    rolled = subprocess.run(["bash", str(opt / "current/deploy/rollback.sh"), "--root", str(root)],
                            capture_output=True, text=True, timeout=60)
    assert rolled.returncode == 0, rolled.stderr
    assert f"going back from {edge.__version__}" in rolled.stdout and "to 0.3.0 (0.3.0-legacy)" in rolled.stdout
    assert "the record was not migrated" in rolled.stdout  # no copy of the record newer than the switch
    assert os.readlink(opt / "current") == "releases/0.3.0-legacy" and os.readlink(opt / "previous") == new
    assert (opt / "current/VERSION").read_text().strip() == "0.3.0"

    time.sleep(1.1)  # a new release folder is named to the second
    again = _install("--root", str(root))
    assert again.returncode == 0, again.stderr
    newer = os.readlink(opt / "current")
    assert newer != new and os.readlink(opt / "previous") == "releases/0.3.0-legacy"
    assert not (opt / new).exists()  # neither current nor previous: removed
    third = _install("--root", str(root))
    assert third.returncode == 0, third.stderr
    assert os.readlink(opt / "previous") == newer
    assert not (opt / "releases/0.3.0-legacy").exists() and not (opt / "venv").exists()  # the adopted one too
    assert sorted(p.name for p in (opt / "releases").iterdir()) == sorted([newer[9:], os.readlink(opt / "current")[9:]])


def test_rollback_without_a_previous_release_changes_nothing(tmp_path):
    root = tmp_path / "root"
    assert _install("--root", str(root)).returncode == 0
    current = os.readlink(root / "opt/blastscope/current")
    r = subprocess.run(["bash", str(DEPLOY / "rollback.sh"), "--root", str(root)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "no previous release is kept" in r.stderr and "Traceback" not in r.stderr
    assert os.readlink(root / "opt/blastscope/current") == current
