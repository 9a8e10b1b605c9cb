"""The base of every component's settings: typed, validated, frozen, unknown keys refused.

Each component keeps its own settings class beside its code (``CameraConfig`` in
``edge.device.capture``, ``StoreConfig`` in ``edge.record.store`` ...), as Frigate keeps a
detector's settings beside the detector; ``edge.device.config`` only assembles them from the
TOML file, the environment and the command line. pydantic does the checking, so a constraint
lives on its field and one error names the key. Numbers refuse TOML's true/false (pydantic
would read ``true`` as 1), and strings from the environment are read as numbers or booleans.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: An int or a float that TOML's true/false cannot pass for.
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
