"""Developer tools run from a checkout (``python -m tools.NAME``); not installed on a device."""
