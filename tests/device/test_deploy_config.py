"""The shipped example config is valid and documents exactly the daemon's defaults."""

from __future__ import annotations

from edge.device.config import Config, load_config

from conftest import ROOT


def test_example_config_loads_to_the_defaults():
    assert load_config(ROOT / "deploy" / "config.example.toml", environ={}) == Config()
