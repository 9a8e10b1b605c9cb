"""The daemon's configuration: one typed object, read from a TOML file and the environment.

Precedence: defaults < TOML file < environment (``BLASTSCOPE_*``) < command-line flags.
Each component's settings live beside the component (``edge.settings``); this module only
assembles them. pydantic validates every value at start-up, and a wrong one is an error
naming its key, so a typo in ``/etc/blastscope/config.toml`` stops the service with a message
in the journal instead of running with a surprise.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, ValidationError

from edge.analysis.case import CasesConfig
from edge.analysis.quality import QualityConfig
from edge.device.button import ButtonConfig
from edge.device.clock import ClockConfig
from edge.device.analysis_queue import QueueConfig
from edge.device.capture import CameraConfig
from edge.device.httpserver import ServerConfig
from edge.device.live import LiveConfig
from edge.device.modelstore import current_bundle_path
from edge.device.scan import ScanConfig
from edge.model.bundle import default_bundle_path
from edge.model.inference import InferenceConfig
from edge.model.signing import Trust
from edge.device.district import DistrictConfig
from edge.record.store import StoreConfig
from edge.settings import Settings


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key."""


class Config(Settings):
    camera: CameraConfig = Field(default_factory=CameraConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    cases: CasesConfig = Field(default_factory=CasesConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    button: ButtonConfig = Field(default_factory=ButtonConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    district: DistrictConfig = Field(default_factory=DistrictConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)

    @property
    def bundle_path(self) -> Path:
        """The configured bundle, else the one installed with ``model install``, else the shipped one."""
        if self.inference.bundle:
            return Path(self.inference.bundle)
        return current_bundle_path(self.state_dir) or default_bundle_path()

    @property
    def device_name(self) -> str:
        return self.server.device_name or socket.gethostname()

    @property
    def trust(self) -> Trust:
        return Trust.with_added(self.inference.trusted_keys, self.inference.allow_unsigned)

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



def _error(exc: ValidationError) -> ConfigError:
    """The first problem, as ``config: section.key: what is wrong``."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return ConfigError(f"config: unknown key {where}")
    message = first["msg"].removeprefix("Value error, ")
    return ConfigError(f"config: {where}: {message} (got {first.get('input')!r})")


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file, then the environment, then ``overrides`` (dotted keys)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config: {path}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path}: not valid TOML ({exc})") from None
    for name, values in data.items():
        if name not in Config.model_fields:
            raise ConfigError(f"config: unknown section [{name}] (known: {', '.join(Config.model_fields)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config: [{name}] must be a table")
    env = os.environ if environ is None else environ
    layered = [(ENVIRONMENT[var], env[var]) for var in ENVIRONMENT if env.get(var)]
    layered += [(key, value) for key, value in (overrides or {}).items() if value is not None]
    for dotted, value in layered:
        section, key = dotted.split(".")
        data.setdefault(section, {})[key] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _error(exc) from None
