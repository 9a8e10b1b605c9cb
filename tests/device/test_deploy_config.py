"""The shipped example config is valid and documents exactly the daemon's defaults."""

from __future__ import annotations

from edge.device.config import Config, load_config

from conftest import ROOT


def test_example_config_loads_to_the_defaults():
    assert load_config(ROOT / "deploy" / "config.example.toml", environ={}) == Config()


def test_example_config_names_every_setting_in_its_section():
    """Every key of every section is in the example, set or commented out, so an operator can
    find it there; a key added to the code and not to the example fails here."""
    import re

    text = (ROOT / "deploy" / "config.example.toml").read_text()
    sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S))
    for section, field in Config.model_fields.items():
        assert section in sections, section
        for key in field.annotation.model_fields:
            assert re.search(rf"^#?\s*{key}\s*=", sections[section], re.M), f"[{section}] {key}"
