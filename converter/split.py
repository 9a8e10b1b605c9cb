"""Patient-proxy split: train/validation/test by contiguous blocks of file numbers.

File numbers follow capture order, and neighbouring numbers are often the same patient
(sometimes near-identical frames). A per-image random split leaks patients between train
and test, so samples are grouped into blocks of ``block_size`` consecutive file numbers
per class, exact duplicates (same bytes) are merged into one group wherever they sit,
and whole groups are assigned to splits, stratified by class, from a seeded shuffle.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass
from typing import Iterable

from edge.dataset import Sample
from edge.labels import LABELS

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    block_size: int = 25
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 1234


def _content_hash(sample: Sample) -> str:
    return hashlib.sha256(sample.path.read_bytes()).hexdigest()


def _groups(samples: list[Sample], block_size: int) -> list[list[int]]:
    """Indices of samples grouped by (label, block of file numbers), with groups that
    share an exact duplicate merged (union-find)."""
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    first_of: dict[object, int] = {}
    for i, sample in enumerate(samples):
        number = sample.number if sample.number is not None else -1
        for key in ((sample.label, number // block_size), ("sha", _content_hash(sample))):
            if key in first_of:
                union(i, first_of[key])
            else:
                first_of[key] = i
    grouped: dict[int, list[int]] = {}
    for i in range(len(samples)):
        grouped.setdefault(find(i), []).append(i)
    return sorted(grouped.values(), key=lambda g: min(g))


def split_samples(samples: list[Sample], config: SplitConfig = SplitConfig()) -> dict[str, list[str]]:
    """Assign every sample key to one of train/val/test.

    Within each class (a group's majority label), groups are shuffled with the seed and
    filled into test, then validation, up to their fractions; the rest is training. Each
    split gets at least one group of a class that has three groups or more, so a small
    dataset still yields usable validation and test sets.
    """
    rng = random.Random(config.seed)
    by_label: dict[str, list[list[int]]] = {label: [] for label in LABELS}
    for group in _groups(samples, config.block_size):
        labels = [samples[i].label for i in group]
        by_label[max(set(labels), key=labels.count)].append(group)
    assignment: dict[str, list[str]] = {name: [] for name in SPLITS}
    for label in LABELS:
        groups = by_label[label]
        rng.shuffle(groups)
        total = sum(len(g) for g in groups)
        targets = {"test": config.test_fraction * total, "val": config.val_fraction * total}
        filled = {"test": 0, "val": 0}
        for k, group in enumerate(groups):
            remaining = len(groups) - k
            name = "train"
            for candidate in ("test", "val"):
                need = filled[candidate] == 0 and len(groups) >= 3
                if (need or filled[candidate] + len(group) / 2 <= targets[candidate]) and remaining > 1:
                    name = candidate
                    break
            if name != "train":
                filled[name] += len(group)
            assignment[name].extend(samples[i].key for i in group)
    return {name: sorted(keys) for name, keys in assignment.items()}


def split_record(split: dict[str, list[str]], config: SplitConfig) -> dict[str, object]:
    """The manifest's record of the split: method, parameters and the keys themselves."""
    return {
        "method": (
            f"blocks of {config.block_size} consecutive file numbers per class (patient proxy), "
            "exact duplicates merged, stratified by class, seeded shuffle"
        ),
        **asdict(config),
        "counts": {name: len(keys) for name, keys in split.items()},
        "keys": split,
    }


def select(samples: Iterable[Sample], keys: Iterable[str]) -> list[Sample]:
    wanted = set(keys)
    return [s for s in samples if s.key in wanted]
