"""Patient-proxy split on the real dataset: blocks never straddle, duplicates never leak."""

from __future__ import annotations

import shutil
from collections import Counter

from converter.split import SplitConfig, split_samples
from edge.dataset import load_dataset
from edge.labels import LABELS

from conftest import tiny_dataset


def _where(split: dict[str, list[str]]) -> dict[str, str]:
    return {key: name for name, keys in split.items() for key in keys}


def test_real_split_is_grouped_stratified_and_deterministic(dataset_dir):
    ds = load_dataset(dataset_dir, verify=False)
    config = SplitConfig()
    split = split_samples(ds.samples, config)
    assert split == split_samples(ds.samples, config)
    assert split != split_samples(ds.samples, SplitConfig(seed=config.seed + 1))
    where = _where(split)
    assert len(where) == len(ds.samples)  # every sample in exactly one split
    blocks: dict[tuple[str, int], set[str]] = {}
    for s in ds.samples:
        blocks.setdefault((s.label, s.number // config.block_size), set()).add(where[s.key])
    assert all(len(names) == 1 for names in blocks.values()), "a block of file numbers straddles splits"
    for name, fraction in (("val", config.val_fraction), ("test", config.test_fraction)):
        per_class = Counter(k.split("/")[0] for k in split[name])
        for label in LABELS:
            total = sum(s.label == label for s in ds.samples)
            assert abs(per_class[label] / total - fraction) < 0.06, (name, label)


def test_exact_duplicates_never_straddle_splits(tmp_path, dataset_dir):
    root = tiny_dataset(tmp_path / "data", per_class=12)
    # the same bytes under a far-away file number, as the dataset's duplicate pairs are
    original = sorted((root / "Pre").iterdir())[0]
    shutil.copy(original, root / "Pre" / "WBC-Malignant-Pre-900.jpg")
    ds = load_dataset(root)
    for seed in range(10):
        where = _where(split_samples(ds.samples, SplitConfig(block_size=10, seed=seed)))
        assert where[f"pre_b/{original.name}"] == where["pre_b/WBC-Malignant-Pre-900.jpg"]


def test_small_dataset_still_gets_every_split(tmp_path, dataset_dir):
    ds = load_dataset(tiny_dataset(tmp_path / "data", per_class=6))
    split = split_samples(ds.samples, SplitConfig(block_size=10))
    for name in ("train", "val", "test"):
        assert {k.split("/")[0] for k in split[name]} == set(LABELS), name
