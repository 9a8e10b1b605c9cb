"""``blastscope-edge serve``: build the service from the config and run it until SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from edge.web.auth import load_credentials
from edge.model.bundle import default_bundle_path, load_bundle
from edge.device.capture import CameraError, CameraWorker, open_source
from edge import SAMPLES_DIR
from edge.device.config import Config, load_config
from edge.device.httpserver import HttpServer
from edge.device.modelstore import startup_bundle
from edge.model.edgetpu_process import EdgeTpuProcess
from edge.model.inference import BackendManager
from edge.device.notify import Watchdog, notifier, watchdog_interval
from edge.pipeline import Pipeline
from edge.device.service import Service
from edge.record.store import Store
from edge.web import create_app

log = logging.getLogger("blastscope")

DEMO_OVERRIDES = {"camera.source": f"replay:{SAMPLES_DIR}", "inference.backend": "cpu",
                  "inference.bundle": str(default_bundle_path())}


def build_service(cfg: Config) -> Service:
    if cfg.inference.bundle:  # named explicitly: that bundle or nothing
        bundle, notes = load_bundle(cfg.inference.bundle, cfg.trust), list[str]()
    else:
        bundle, notes = startup_bundle(cfg.state_dir, cfg.trust, default_bundle_path())
        for note in notes:
            log.warning("model: %s", note)
    # the Edge TPU in a child process: a crash in Coral's native stack means CPU, not a dead daemon
    backends = BackendManager(bundle.cpu_model, bundle.edgetpu_model, cfg.inference.backend,
                              cfg.inference.threads, cfg.inference.reprobe_seconds, edgetpu_factory=EdgeTpuProcess)
    camera = CameraWorker(cfg.camera.source, lambda spec: open_source(spec, cfg.camera.width, cfg.camera.height,
                                                                 cfg.camera.capture_timeout_seconds,
                                                                 cfg.camera.controls()),
                          cfg.camera.fps, cfg.camera.retry_max_seconds)
    return Service(cfg, bundle, Pipeline(bundle, backends, cfg.quality, views=cfg.inference.views), Store(cfg.state_dir, cfg.store), camera,
                   model_notes=notes)


#: syslog priorities (sd-daemon(3)): journald reads a "<N>" line prefix as the line's priority,
#: so a warning is a warning in ``journalctl -p warning``, not one more info line.
PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _Priority(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.priority = PRIORITIES.get(record.levelno, 6)
        return True


def configure_logging(journal: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if journal:
        handler.addFilter(_Priority())
        handler.setFormatter(logging.Formatter("<%(priority)d>%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def under_systemd() -> bool:
    """Started by systemd (its output goes to the journal), not from a terminal."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("JOURNAL_STREAM"))


def status_line(service: Service) -> str:
    s = service.status()
    camera = "camera ok" if s["camera"] and s["camera"]["connected"] else "camera down"
    return f"{s['status']}: backend {s['backend']['active']}, {camera}, {s['disk']['results']} results"


def serve(config_path: Path | None, overrides: dict[str, Any], demo: bool) -> int:
    configure_logging(under_systemd())
    cfg = load_config(config_path, overrides={**(DEMO_OVERRIDES if demo else {}),
                                              **{k: v for k, v in overrides.items() if v is not None}})
    service = build_service(cfg)
    creds = load_credentials(cfg.state_dir, cfg.server.pin, cfg.server.token)
    if creds.generated:
        where = cfg.state_dir / "credentials"
        if under_systemd():
            # the journal keeps everything and more people read it than should log in: say where
            print(f"BlastScope first start: a PIN and an API token were created in {where} (readable by root "
                  "and the service user only); show them with: sudo blastscope-edge credentials "
                  f"--state-dir {cfg.state_dir}", flush=True)
        else:  # a terminal (make demo): printed once, on the start that created them
            print(f"BlastScope first start: PIN {creds.pin}  API token {creds.token}  (kept in {where})", flush=True)
    app = create_app(service, creds, cfg.server)
    server = HttpServer(app, cfg.server, body_gate=app.extensions["blastscope.body_gate"],
                        busy_gate=service.analyses.busy_for)
    camera = service.camera
    assert camera is not None  # the daemon always builds its camera worker (build_service)
    camera.start()
    try:
        camera.latest(wait_s=5.0)  # READY after the first frame, or after saying why there is none
    except CameraError as exc:
        log.warning("camera %s: %s", cfg.camera.source, exc)
    service.start_button()  # the GPIO button, when button.gpio is set
    if service.district is not None:
        service.district.start()
    notify = notifier()
    stopping = service.stopping

    def shutdown(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()  # the app now answers new requests with 503 and closes connections
            log.info("signal %d: stopping; requests under way get %.0f s to finish", signum, cfg.server.drain_seconds)
            notify("STOPPING=1")
            server.stop()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    interval = watchdog_interval()
    watchdog = None
    if interval:
        watchdog = Watchdog(notify, interval, lambda: not stopping.is_set() and service.stalled() is None,
                            lambda: status_line(service)).start()
    print(f"BlastScope serving on http://{cfg.server.host}:{server.port} "
          f"(model {service.bundle.model_id}, backend {service.pipeline.backends.name}, camera {cfg.camera.source}, "
          f"state {cfg.state_dir})", flush=True)
    notify(f"READY=1\nSTATUS={status_line(service)}")
    try:
        drained = server.run()
    finally:
        if watchdog:
            watchdog.stop()
        if service.scan is not None:
            service.scan.stop("the device is stopping")
        if service.button is not None:
            service.button.close()
        service.analyses.close(timeout=cfg.server.drain_seconds)  # the analysis under way finishes first
        if service.district is not None:
            service.district.stop()
        camera.stop()
    service.store.close()  # after the request threads are joined: nothing writes to a closed store
    print(f"BlastScope stopped: drained in {drained.seconds:.2f} s, {drained.unfinished} request(s) unfinished; "
          "store closed", flush=True)
    return 0
