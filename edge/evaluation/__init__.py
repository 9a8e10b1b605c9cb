"""Measuring the device pipeline offline: datasets, metrics, evaluation, capture-condition
degradations, the robustness suite and the benchmark. Never imported by the device."""
