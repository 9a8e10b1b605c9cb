"""The daemon's configuration: one typed object, read from a TOML file and the environment.

Precedence: defaults < TOML file < environment (``BLASTSCOPE_*``) < command-line flags.
Every value is validated at start-up and a wrong one is an error naming its key, so a
typo in ``/etc/blastscope/config.toml`` stops the service with a message in the journal
instead of running with a surprise.
"""

from __future__ import annotations

import os
import tomllib
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from edge.analysis.case import CasesConfig
from edge.analysis.quality import QualityConfig
from edge.device.capture import CameraConfig
from edge.device.httpserver import ServerConfig
from edge.model.inference import InferenceConfig
from edge.record.store import StoreConfig
from edge.model.bundle import default_bundle_path
from edge.device.modelstore import current_bundle_path
from edge.model.signing import SignatureError, Trust

BACKENDS = ("auto", "edgetpu", "cpu")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    cases: CasesConfig = field(default_factory=CasesConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    @property
    def bundle_path(self) -> Path:
        """The configured bundle, else the one installed with ``model install``, else the shipped one."""
        if self.inference.bundle:
            return Path(self.inference.bundle)
        return current_bundle_path(self.state_dir) or default_bundle_path()

    @property
    def device_name(self) -> str:
        import socket

        return self.server.device_name or socket.gethostname()

    @property
    def trust(self) -> Trust:
        return Trust(self.inference.trusted_keys, self.inference.allow_unsigned)

    @property
    def state_dir(self) -> Path:
        if self.store.state_dir:
            return Path(self.store.state_dir)
        if os.environ.get("STATE_DIRECTORY"):
            return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
        return Path.home() / ".local" / "state" / "blastscope"


#: Environment variables and the key each one sets.
ENVIRONMENT = {
    "BLASTSCOPE_PIN": "server.pin",
    "BLASTSCOPE_TOKEN": "server.token",
    "BLASTSCOPE_SOURCE": "camera.source",
    "BLASTSCOPE_BACKEND": "inference.backend",
    "BLASTSCOPE_BUNDLE": "inference.bundle",
    "BLASTSCOPE_STATE_DIR": "store.state_dir",
    "BLASTSCOPE_PORT": "server.port",
}


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               tuple[str, ...]: "a list of strings"}


def _coerce(key: str, kind: Any, value: Any) -> Any:
    optional = [a for a in typing.get_args(kind) if a is not type(None)]
    if len(optional) == 1 and type(None) in typing.get_args(kind):  # "float | None": unset means None
        kind = optional[0]
    wrong = ConfigError(f"config: {key} must be {_KIND_NAMES[kind]}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):  # from the environment
            return value.lower() in ("true", "1")
        raise wrong
    if kind == tuple[str, ...]:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise wrong
    if isinstance(value, bool):  # TOML true/false is never a number or a string here
        raise wrong
    if kind is float and isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, kind):
        return value
    if isinstance(value, str) and kind in (int, float):  # from the environment
        try:
            return kind(value)
        except ValueError:
            pass
    raise wrong


def _section(cls: type, name: str, values: Mapping[str, Any], base: Any) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"config: [{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"config: unknown key {name}.{key} (known: {', '.join(sorted(known))})")
    return replace(base, **{k: _coerce(f"{name}.{k}", hints[k], v) for k, v in values.items()})


def _validate(cfg: Config) -> Config:
    checks = [
        (cfg.inference.backend in BACKENDS, "inference.backend", f"must be one of {', '.join(BACKENDS)}"),
        (cfg.camera.source == "picamera2" or cfg.camera.source.split(":", 1)[0] in ("opencv", "replay")
         and ":" in cfg.camera.source, "camera.source", "must be picamera2, opencv:N or replay:PATH"),
        (cfg.camera.fps > 0, "camera.fps", "must be positive"),
        (cfg.camera.width > 0 and cfg.camera.height > 0, "camera.width", "width and height must be positive"),
        (cfg.camera.retry_max_seconds > 0, "camera.retry_max_seconds", "must be positive"),
        (cfg.inference.threads >= 1, "inference.threads", "must be at least 1"),
        (cfg.inference.reprobe_seconds > 0, "inference.reprobe_seconds", "must be positive"),
        (cfg.quality.min_focus is None or cfg.quality.min_focus >= 0, "quality.min_focus", "must not be negative"),
        (cfg.quality.max_clipped is None or 0 < cfg.quality.max_clipped <= 1, "quality.max_clipped",
         "must be in (0, 1]"),
        (cfg.quality.max_noise is None or cfg.quality.max_noise > 0, "quality.max_noise", "must be positive"),
        (cfg.quality.max_border is None or 0 < cfg.quality.max_border <= 1, "quality.max_border", "must be in (0, 1]"),
        (cfg.quality.min_brightness is None or 0 <= cfg.quality.min_brightness < 255, "quality.min_brightness",
         "must be in [0, 255)"),
        (cfg.store.max_results >= 1, "store.max_results", "must be at least 1"),
        (cfg.store.max_age_days > 0, "store.max_age_days", "must be positive"),
        (cfg.store.min_free_mb >= 0, "store.min_free_mb", "must not be negative"),
        (0 <= cfg.cases.min_fields <= 100, "cases.min_fields", "must be 0-100"),
        (0 <= cfg.server.port < 65536, "server.port", "must be 0-65535 (0: any free port)"),
        # 4 digits fall to the device-wide login limit in about 7 days (README, "Login"); 6 take years
        (cfg.server.pin == "" or (cfg.server.pin.isascii() and cfg.server.pin.isdigit() and 6 <= len(cfg.server.pin) <= 12),
         "server.pin", "must be 6-12 digits"),
        (cfg.server.token == "" or len(cfg.server.token) >= 16, "server.token", "must be at least 16 characters"),
        (cfg.server.max_upload_mb > 0, "server.max_upload_mb", "must be positive"),
        (cfg.server.max_pixels > 0, "server.max_pixels", "must be positive"),
        (cfg.server.lockout_attempts >= 1, "server.lockout_attempts", "must be at least 1"),
        (cfg.server.lockout_seconds > 0, "server.lockout_seconds", "must be positive"),
        (cfg.server.login_free_failures >= 1, "server.login_free_failures", "must be at least 1"),
        (1 <= cfg.server.login_max_delay_seconds <= 3600, "server.login_max_delay_seconds", "must be 1-3600"),
        (0 < cfg.server.session_hours <= 24 * 31, "server.session_hours", "must be in (0, 744]"),
        (cfg.server.threads >= 1, "server.threads", "must be at least 1"),
        (cfg.server.connection_limit >= 10, "server.connection_limit", "must be at least 10"),
        (cfg.server.channel_timeout > 0, "server.channel_timeout", "must be positive"),
        (0 < cfg.server.drain_seconds <= 60, "server.drain_seconds", "must be in (0, 60]"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"config: {key} {message}")
    try:
        cfg.trust
    except SignatureError as exc:
        raise ConfigError(f"config: inference.trusted_keys: {exc}") from None
    return cfg


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file, then the environment, then ``overrides`` (dotted keys)."""
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config: {path}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path}: not valid TOML ({exc})") from None
    env = os.environ if environ is None else environ
    layered = [(f"environment {var}", ENVIRONMENT[var], env[var]) for var in ENVIRONMENT if env.get(var)]
    layered += [("command line", key, value) for key, value in (overrides or {}).items() if value is not None]
    for _, dotted, value in layered:
        section, key = dotted.split(".")
        data.setdefault(section, {})[key] = value
    cfg = Config()
    sections = {f.name: f for f in fields(Config)}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"config: unknown section [{name}] (known: {', '.join(sections)})")
        cfg = replace(cfg, **{name: _section(type(getattr(cfg, name)), name, values, getattr(cfg, name))})
    return _validate(cfg)
