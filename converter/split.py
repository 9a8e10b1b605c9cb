"""Patient-proxy split: train/validation/test by blocks of the capture sequence.

File numbers follow capture order, and neighbouring numbers are often the same patient
(sometimes near-identical frames). A per-image random split leaks patients between train
and test, so samples are grouped into patient-proxy blocks (``edge.evaluation.dataset.number_blocks``:
runs of consecutive file numbers, cut from each run's own start, never at multiples of a
grid), near-duplicate fields are merged into one group wherever they sit, and whole groups
are assigned to splits, stratified by class, from a seeded shuffle.

Near-duplicates are found by image similarity, not bytes: the same field re-captured
(Early-499 and Early-501) differs in every byte. Each field becomes a 32x32 grey thumbnail
with zero mean and unit norm; two fields whose thumbnails correlate above
``near_duplicate_correlation`` in any of the 8 orientations are one group. On the dataset the
nearest-neighbour correlations fall into two groups, most fields far below 0.5 and the
re-captured frames above 0.9, with few between; 0.6 sits between them.
``tests/test_split.py`` checks that the known re-captured pair (Early-499 and Early-501) is
found and that no pair crosses splits.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Iterable

import cv2
import numpy as np

from edge.evaluation.dataset import Sample, number_blocks

from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import LABELS

SPLITS = ("train", "val", "test")
_THUMB = 32


@dataclass(frozen=True)
class SplitConfig:
    block_size: int = 25
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 1234
    near_duplicate_correlation: float = 0.6


def thumbnails(samples: list[Sample]) -> np.ndarray:
    """(N, 32, 32) float32 grey thumbnails, each with zero mean and unit norm."""
    out = np.empty((len(samples), _THUMB, _THUMB), np.float32)
    for i, sample in enumerate(samples):
        grey = cv2.cvtColor(read_rgb(sample.path), cv2.COLOR_RGB2GRAY)
        t = cv2.resize(grey, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
        t -= t.mean()
        out[i] = t / max(float(np.linalg.norm(t)), 1e-6)
    return out


def near_duplicate_pairs(samples: list[Sample], threshold: float) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose thumbnails correlate above ``threshold`` in
    any of the 8 orientations (rotations and flips: a slide can be re-imaged turned)."""
    thumbs = thumbnails(samples)
    flat = thumbs.reshape(len(samples), -1)
    best = np.full((len(samples), len(samples)), -1.0, np.float32)
    for flip in (False, True):
        for k in range(4):
            turned = np.rot90(thumbs[:, :, ::-1] if flip else thumbs, k, axes=(1, 2))
            np.maximum(best, flat @ turned.reshape(len(samples), -1).T, out=best)
    i, j = np.nonzero(np.triu(best, 1) > threshold)
    return sorted(zip(i.tolist(), j.tolist()))


def _groups(samples: list[Sample], config: SplitConfig) -> list[list[int]]:
    """Indices of samples grouped by patient-proxy block, with groups that share a
    near-duplicate merged (union-find)."""
    parent = list(range(len(samples)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    first_of: dict[tuple[str, int], int] = {}
    for i, block in enumerate(number_blocks(samples, config.block_size)):
        if block in first_of:
            union(i, first_of[block])
        else:
            first_of[block] = i
    for i, j in near_duplicate_pairs(samples, config.near_duplicate_correlation):
        union(i, j)
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
    for group in _groups(samples, config):
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
            f"patient-proxy blocks: runs of consecutive file numbers per class cut every {config.block_size} "
            f"from each run's start; near-duplicate fields (thumbnail correlation > {config.near_duplicate_correlation} "
            "in any orientation) merged into one group; stratified by class, seeded shuffle"
        ),
        **asdict(config),
        "counts": {name: len(keys) for name, keys in split.items()},
        "keys": split,
    }


def select(samples: Iterable[Sample], keys: Iterable[str]) -> list[Sample]:
    wanted = set(keys)
    return [s for s in samples if s.key in wanted]
