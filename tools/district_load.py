"""``python -m tools.district_load``: many devices' signed cases to one real Orthanc, through the
device's own outbox and sender, while the link fails (issue 37's targets).

Each simulated device is a state directory with a real record: ``--cases`` cases signed out
(one field each, a real sample field read by the shipped model), queued in the sign-out's own
transaction, and a sender process (``worker``) that runs ``DistrictSender.run_once`` until its
outbox is empty. With ``--chaos`` the server is stopped and started again every
``--flap-seconds``, and one device's sender is killed with SIGKILL while it sends, then started
again on the same record. At the end the server is asked how many studies and instances it
holds: every case must be there exactly once (one study a case, one instance a field), none lost,
none duplicated (one study a case; its field and its summary SR). Prints cases per minute and the p50/p95 time of one case's STOW-RS as the
senders measured it.

Orthanc runs on its default SQLite index unless ``--postgres DSN`` names a PostgreSQL database
(Debian's ``orthanc-postgresql`` plugin). Needs the ``district`` extra and Debian's ``orthanc``
and ``orthanc-dicomweb``; a developer tool, not installed on a device.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGINS = Path("/usr/share/orthanc/plugins")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real Orthanc with DICOMweb on loopback, one user per device."""

    def __init__(self, folder: Path, users: dict[str, str], postgres: str | None = None) -> None:
        """``users``: name -> password, one per device (the first is the one that counts)."""
        import requests  # noqa: F401 - the district extra's dependency, checked early

        self.folder, self.port = folder, _free_port()
        config: dict[str, Any] = {
            "Name": "district-load", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
            "HttpPort": self.port, "DicomPort": _free_port(), "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True, "RegisteredUsers": dict(users),
            "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so")], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpThreadsCount": 50}
        if postgres:
            config["Plugins"].append(str(PLUGINS / "libOrthancPostgreSQLIndex.so"))
            config["PostgreSQL"] = {"EnableIndex": True, "EnableStorage": False, "ConnectionUri": postgres}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.auth = next(iter(users.items()))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        import requests

        self.proc = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/system", auth=self.auth, timeout=2).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def count(self) -> tuple[int, int]:
        import requests

        stats = requests.get(f"{self.url}/statistics", auth=self.auth, timeout=30).json()
        return int(stats["CountStudies"]), int(stats["CountInstances"])

    def instances(self) -> list[str]:
        import requests

        return requests.get(f"{self.url}/instances", auth=self.auth, timeout=10).json()


def _device_config(state: Path, device: str, url: str, password_file: Path):
    from edge.device.config import load_config

    return load_config(None, environ={}, overrides={
        "store.state_dir": str(state), "store.min_free_mb": 0, "server.device_name": device,
        "district.url": f"{url}/dicom-web", "district.user": device, "district.password_file": str(password_file),
        "district.retry_first_seconds": 0.5, "district.retry_max_seconds": 2.0, "district.timeout_seconds": 10.0})


def prepare(root: Path, devices: list[str], cases: int) -> None:
    """Each device's record: ``cases`` cases of one real field each, signed out and queued."""
    from edge import SAMPLES_DIR
    from edge.analysis.imagefile import read_rgb
    from edge.model.bundle import default_bundle_path, load_bundle
    from edge.pipeline import Pipeline
    from edge.record.store import Store, StoreConfig

    pipeline = Pipeline.on_cpu(load_bundle(default_bundle_path()), threads=1)
    results = [pipeline.process(read_rgb(p), source=p.name) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]
    for device in devices:
        store = Store(root / device, StoreConfig(min_free_mb=0))
        try:
            for n in range(cases):
                case_id = store.create_case(f"{device}-{n:04d}", "", "load")
                store.save(results[n % len(results)], case_id, "load")
                case = store.get_case(case_id)
                assert case is not None  # created just above
                revision = case["revision"]
                store.sign_case(case_id, {"call": "positive", "reason": "load test", "reviewer": "load"}, "load",
                                revision, district=True)
        finally:
            store.close()


def worker(state: Path, device: str, url: str, password_file: Path, out: Path) -> int:
    """One device's sender until its outbox is empty; the STOW-RS time of each case sent."""
    from edge.device.district import DistrictSender
    from edge.record.store import Store

    cfg = _device_config(state, device, url, password_file)
    store = Store(state, cfg.store)
    sender = DistrictSender(cfg.district, store, device, "load-model", lambda _case_id: "positive")
    try:
        while store.outbox.waiting()[0]:
            sender.run_once()
            time.sleep(0.05)
    finally:
        with open(out, "a") as f:
            for ms in sender.send_ms:
                f.write(f"{ms:.1f}\n")
        store.close()
    return 0


def run(devices: int, cases: int, chaos: bool, flap_seconds: float, postgres: str | None,
        log=print) -> dict[str, Any]:
    names = [f"ward{i + 1}" for i in range(devices)]
    with tempfile.TemporaryDirectory(prefix="district-load-") as tmp:
        root = Path(tmp)
        t = time.monotonic()
        prepare(root / "devices", names, cases)
        log(f"{devices} devices, {cases} signed cases each, prepared in {time.monotonic() - t:.0f} s")
        server = Server(root / "orthanc", {n: f"{n}-password" for n in names}, postgres)
        server.start()
        for name in names:
            (root / f"{name}.password").write_text(f"{name}-password\n")
        timings = root / "send_ms.txt"

        def spawn(name: str) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "tools.district_load", "worker", "--state",
                                     str(root / "devices" / name), "--device", name, "--url", server.url,
                                     "--password-file", str(root / f"{name}.password"), "--out", str(timings)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        started = time.monotonic()
        workers = {name: spawn(name) for name in names}
        killed = restarts = 0
        next_flap = started + flap_seconds
        while any(w.poll() is None for w in workers.values()):
            time.sleep(0.2)
            now = time.monotonic()
            if chaos and not killed and now - started > min(3.0, flap_seconds / 2):
                victim = names[-1]
                if workers[victim].poll() is None:
                    os.kill(workers[victim].pid, signal.SIGKILL)  # mid-send: its outbox row stays waiting
                    workers[victim].wait()
                    log(f"{victim}'s sender killed with SIGKILL, started again")
                    workers[victim] = spawn(victim)
                killed = 1
            if chaos and now >= next_flap:
                server.stop()
                time.sleep(2.0)
                server.start()
                restarts += 1
                next_flap = time.monotonic() + flap_seconds
        seconds = time.monotonic() - started
        failed = {n: w.stderr.read()[-500:] for n, w in workers.items() if w.returncode != 0 and w.stderr}
        studies, instances = server.count()
        server.stop()
        sends = [float(x) for x in timings.read_text().split()] if timings.exists() else []
    total = devices * cases
    report = {"devices": devices, "cases": total, "index": "PostgreSQL" if postgres else "SQLite",
              "chaos": chaos, "server_restarts": restarts, "senders_killed": killed, "seconds": round(seconds, 1),
              "cases_per_minute": round(total / seconds * 60, 1), "studies_on_server": studies,
              "instances_on_server": instances, "every_case_once": studies == total and instances == 2 * total,  # a field and a summary SR a case
              "stow_ms": {"p50": round(float(np.percentile(sends, 50)), 1) if sends else None,
                          "p95": round(float(np.percentile(sends, 95)), 1) if sends else None, "n": len(sends)},
              "worker_errors": failed}
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.district_load", description=__doc__)
    sub = ap.add_subparsers(dest="command")
    w = sub.add_parser("worker")
    w.add_argument("--state", type=Path, required=True)
    w.add_argument("--device", required=True)
    w.add_argument("--url", required=True)
    w.add_argument("--password-file", type=Path, required=True)
    w.add_argument("--out", type=Path, required=True)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--cases", type=int, default=5, help="signed cases per device")
    ap.add_argument("--chaos", action="store_true", help="stop and start the server, kill a sender mid-send")
    ap.add_argument("--flap-seconds", type=float, default=20.0)
    ap.add_argument("--postgres", help="a PostgreSQL connection URI for Orthanc's index (orthanc-postgresql); an empty "
                                       "database: the counts at the end are the server's")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.command == "worker":
        return worker(args.state, args.device, args.url, args.password_file, args.out)
    if not Path(ORTHANC).exists() or not (PLUGINS / "libOrthancDicomWeb.so").exists():
        print("error: Orthanc and its DICOMweb plugin are needed (apt install orthanc orthanc-dicomweb)", file=sys.stderr)
        return 2
    report = run(args.devices, args.cases, args.chaos, args.flap_seconds, args.postgres,
                 log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['cases']} cases from {report['devices']} devices to one Orthanc ({report['index']} index)"
              + (f", server restarted {report['server_restarts']} times, {report['senders_killed']} sender killed"
                 if report["chaos"] else "")
              + f": {report['cases_per_minute']} cases/min; STOW-RS per case p50 {report['stow_ms']['p50']} ms, p95 "
                f"{report['stow_ms']['p95']} ms; on the server {report['studies_on_server']} studies, "
                f"{report['instances_on_server']} instances: "
              + ("every case exactly once" if report["every_case_once"] else "NOT every case exactly once"))
    return 0 if report["every_case_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
