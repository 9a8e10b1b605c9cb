"""Patient-proxy split on the real dataset: blocks never straddle, duplicates never leak."""

from __future__ import annotations

import pytest

import shutil
from collections import Counter

import cv2

from converter.split import SplitConfig, near_duplicate_pairs, split_samples
from edge.evaluation.dataset import load_dataset, number_blocks
from edge.analysis.imagefile import read_rgb
from edge.analysis.labels import LABELS

from conftest import tiny_dataset


def _where(split: dict[str, list[str]]) -> dict[str, str]:
    return {key: name for name, keys in split.items() for key in keys}


@pytest.mark.system
def test_real_split_is_grouped_stratified_and_deterministic(dataset_dir):
    ds = load_dataset(dataset_dir, verify=False)
    config = SplitConfig()
    split = split_samples(ds.samples, config)
    assert split == split_samples(ds.samples, config)
    assert split != split_samples(ds.samples, SplitConfig(seed=config.seed + 1))
    where = _where(split)
    assert len(where) == len(ds.samples)  # every sample in exactly one split
    blocks: dict[tuple[str, int], set[str]] = {}
    for s, block in zip(ds.samples, number_blocks(ds.samples, config.block_size)):
        blocks.setdefault(block, set()).add(where[s.key])
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


def test_blocks_follow_runs_of_file_numbers_not_a_grid(dataset_dir):
    ds = load_dataset(dataset_dir, verify=False)
    blocks = dict(zip((s.key for s in ds.samples), number_blocks(ds.samples, 25)))
    # Early-499..501 sit across the old grid line at 500; a block now starts where its run does
    assert blocks["early_pre_b/WBC-Malignant-Early-499.jpg"] == blocks["early_pre_b/WBC-Malignant-Early-501.jpg"]
    sizes: dict[tuple[str, int], int] = {}
    for block in blocks.values():
        sizes[block] = sizes.get(block, 0) + 1
    assert min(sizes.values()) >= 13 and max(sizes.values()) < 38  # no slivers, no giant blocks


@pytest.mark.system
def test_no_near_duplicate_pair_crosses_splits(dataset_dir):
    """Re-captured fields differ in every byte; they must still land in one split."""
    ds = load_dataset(dataset_dir, verify=False)
    config = SplitConfig()
    pairs = near_duplicate_pairs(ds.samples, config.near_duplicate_correlation)
    keys = {(ds.samples[i].key, ds.samples[j].key) for i, j in pairs}
    assert ("early_pre_b/WBC-Malignant-Early-499.jpg", "early_pre_b/WBC-Malignant-Early-501.jpg") in keys
    assert len(pairs) > 40
    for seed in range(3):
        where = _where(split_samples(ds.samples, SplitConfig(seed=seed)))
        crossing = [(a, b) for a, b in keys if where[a] != where[b]]
        assert not crossing, crossing


def test_altered_copy_far_away_is_grouped_with_its_original(tmp_path, dataset_dir):
    """The same field re-saved darker, turned and JPEG-recompressed under a distant number."""
    root = tiny_dataset(tmp_path / "data", per_class=12)
    original = sorted((root / "Pre").iterdir())[0]
    rgb = read_rgb(original)
    altered = cv2.convertScaleAbs(cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE), alpha=0.9, beta=-5)
    cv2.imwrite(str(root / "Pre" / "WBC-Malignant-Pre-900.jpg"), cv2.cvtColor(altered, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 70])
    ds = load_dataset(root)
    for seed in range(10):
        where = _where(split_samples(ds.samples, SplitConfig(block_size=10, seed=seed)))
        assert where[f"pre_b/{original.name}"] == where["pre_b/WBC-Malignant-Pre-900.jpg"]


@pytest.mark.system
def test_the_shipped_bundles_split_has_no_near_duplicate_across_splits(default_bundle, dataset_dir):
    import json

    recorded = json.loads((default_bundle / "manifest.json").read_text())["split"]
    where = _where(recorded["keys"])
    ds = load_dataset(dataset_dir, verify=False)
    pairs = near_duplicate_pairs(ds.samples, SplitConfig().near_duplicate_correlation)
    crossing = [(ds.samples[i].key, ds.samples[j].key) for i, j in pairs
                if where[ds.samples[i].key] != where[ds.samples[j].key]]
    assert not crossing, crossing
