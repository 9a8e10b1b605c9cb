"""Canonical class labels, shared by the converter, the bundle and the device."""

from __future__ import annotations

#: Model output order. Changing it changes every bundle: the manifest records it.
LABELS: tuple[str, ...] = ("benign", "early_pre_b", "pre_b", "pro_b")

BENIGN = "benign"

DISPLAY_NAMES: dict[str, str] = {
    "benign": "Benign (hematogones)",
    "early_pre_b": "Early Pre-B ALL",
    "pre_b": "Pre-B ALL",
    "pro_b": "Pro-B ALL",
}
