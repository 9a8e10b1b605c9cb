"""Dataset layouts, label mapping and bad-file handling, on real sample images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge.evaluation.dataset import DatasetError, file_number, label_for_folder, load_dataset
from edge.analysis.labels import LABELS

from conftest import sample_paths

KAGGLE_FOUR = {"benign": "Benign", "early_pre_b": "[Malignant] early Pre-B",
               "pre_b": "[Malignant] Pre-B", "pro_b": "[Malignant] Pro-B"}
PLAIN = {"benign": "Benign", "early_pre_b": "Early", "pre_b": "Pre", "pro_b": "Pro"}


def _populate(root: Path, folders: dict[str, str]) -> Path:
    for label, folder in folders.items():
        (root / folder).mkdir(parents=True)
        for path in sample_paths():
            if path.name.startswith(label + "__"):
                shutil.copy(path, root / folder / path.name.split("__", 1)[1])
    return root


@pytest.mark.parametrize("folders", [PLAIN, KAGGLE_FOUR, {lab: lab for lab in LABELS}], ids=["plain", "kaggle-four", "canonical"])
def test_layouts_map_to_canonical_labels(tmp_path, folders):
    ds = load_dataset(_populate(tmp_path, folders))
    assert ds.counts() == {label: 2 for label in LABELS}
    assert not ds.skipped
    for s in ds.samples:
        assert s.key == f"{s.label}/{s.path.name}"


def test_kaggle_original_segmented_layout_uses_original(tmp_path):
    _populate(tmp_path / "Original", PLAIN)
    _populate(tmp_path / "Segmented", PLAIN)
    ds = load_dataset(tmp_path)
    assert len(ds.samples) == 8
    assert all("Original" in s.path.parts for s in ds.samples)


def test_unreadable_and_non_image_files_are_reported_and_skipped(tmp_path):
    root = _populate(tmp_path, PLAIN)
    (root / "Pre" / "notes.txt").write_text("not an image")
    (root / "Pre" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "Pro" / "empty.png").write_bytes(b"")
    ds = load_dataset(root)
    skipped = {p.name: reason for p, reason in ds.skipped}
    assert skipped == {"notes.txt": "not an image file", "broken.jpg": "unreadable image", "empty.png": "unreadable image"}
    assert len(ds.samples) == 8


def test_empty_class_is_an_error_naming_the_folder(tmp_path):
    root = _populate(tmp_path, PLAIN)
    for f in (root / "Pro").iterdir():
        f.unlink()
    (root / "Pro" / "junk.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError, match=r"Pro: class pro_b has no readable images"):
        load_dataset(root)


def test_missing_class_folder_is_an_error(tmp_path):
    root = _populate(tmp_path, PLAIN)
    shutil.rmtree(root / "Early")
    with pytest.raises(DatasetError, match="no folder for class.*early_pre_b"):
        load_dataset(root)


def test_folder_names_and_numbers():
    assert label_for_folder("[Malignant] early Pre-B") == "early_pre_b"
    assert label_for_folder("PRO") == "pro_b"
    assert label_for_folder("Segmented") is None
    assert file_number(Path("WBC-Malignant-Pre-012.jpg")) == 12
    assert file_number(Path("field.jpg")) is None
