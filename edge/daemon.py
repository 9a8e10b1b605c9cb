"""``blastscope-edge serve``: build the service from the config and run it until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from waitress.server import create_server

from edge.auth import load_credentials
from edge.bundle import default_bundle_path, load_bundle
from edge.capture import CameraError, CameraWorker, open_source
from edge import SAMPLES_DIR
from edge.config import Config, load_config
from edge.inference import BackendManager
from edge.notify import Watchdog, notifier, watchdog_interval
from edge.pipeline import Pipeline
from edge.service import Service
from edge.store import Store
from edge.web import create_app

log = logging.getLogger("blastscope")

DEMO_OVERRIDES = {"camera.source": f"replay:{SAMPLES_DIR}", "inference.backend": "cpu",
                  "inference.bundle": str(default_bundle_path())}


def build_service(cfg: Config) -> Service:
    bundle = load_bundle(cfg.bundle_path, cfg.trust)
    backends = BackendManager(bundle.cpu_model, bundle.edgetpu_model, cfg.inference.backend,
                              cfg.inference.threads, cfg.inference.reprobe_seconds)
    camera = CameraWorker(cfg.camera.source, lambda spec: open_source(spec, cfg.camera.width, cfg.camera.height),
                          cfg.camera.fps, cfg.camera.retry_max_seconds)
    return Service(cfg, bundle, Pipeline(bundle, backends, cfg.quality), Store(cfg.state_dir, cfg.store), camera)


def status_line(service: Service) -> str:
    s = service.status()
    camera = "camera ok" if s["camera"] and s["camera"]["connected"] else "camera down"
    return f"{s['status']}: backend {s['backend']['active']}, {camera}, {s['disk']['results']} results"


def serve(config_path: Path | None, overrides: dict[str, Any], demo: bool) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    cfg = load_config(config_path, overrides={**(DEMO_OVERRIDES if demo else {}),
                                              **{k: v for k, v in overrides.items() if v is not None}})
    service = build_service(cfg)
    creds = load_credentials(cfg.state_dir, cfg.server.pin, cfg.server.token)
    if creds.generated:
        # Printed once, on the start that created them; they stay in the state folder (0600).
        print(f"BlastScope first start: PIN {creds.pin}  API token {creds.token}  "
              f"(kept in {cfg.state_dir / 'credentials'})", flush=True)
    server = create_server(create_app(service, creds, cfg.server), host=cfg.server.host, port=cfg.server.port,
                           threads=cfg.server.threads, ident="BlastScope",
                           connection_limit=cfg.server.connection_limit, channel_timeout=cfg.server.channel_timeout,
                           cleanup_interval=max(1.0, cfg.server.channel_timeout / 3))
    service.camera.start()
    try:
        service.camera.latest(wait_s=5.0)  # READY after the first frame, or after saying why there is none
    except CameraError as exc:
        log.warning("camera %s: %s", cfg.camera.source, exc)
    notify = notifier()
    stopping = threading.Event()

    def shutdown(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %d: shutting down", signum)
            notify("STOPPING=1")
            server.close()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    interval = watchdog_interval()
    watchdog = None
    if interval:
        watchdog = Watchdog(notify, interval, lambda: not stopping.is_set() and service.stalled() is None,
                            lambda: status_line(service)).start()
    print(f"BlastScope serving on http://{cfg.server.host}:{server.effective_port} "
          f"(model {service.bundle.model_id}, backend {service.pipeline.backends.name}, camera {cfg.camera.source}, "
          f"state {cfg.state_dir})", flush=True)
    notify(f"READY=1\nSTATUS={status_line(service)}")
    try:
        server.run()
    except (OSError, ValueError):
        if not stopping.is_set():
            raise
    finally:
        if watchdog:
            watchdog.stop()
        service.camera.stop()
        service.store.close()
        log.info("stopped; store flushed")
    return 0
