"""Labelled image folders: the layouts BlastScope accepts, mapped to canonical labels.

Lives in ``edge`` because the device's ``evaluate`` command reads the same folders as
the converter, and ``edge`` may not import ``converter``.

Accepted layouts (folder names matched case-insensitively):
- plain class folders: ``Benign/ Early/ Pre/ Pro/`` (or the canonical label names);
- the Kaggle ALL layout: ``Original/<class>/`` with an optional ``Segmented/<class>/``
  (ignored: BlastScope segments itself so training matches the device);
- the Kaggle four-class names: ``Benign``, ``[Malignant] early Pre-B``,
  ``[Malignant] Pre-B``, ``[Malignant] Pro-B``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


from edge.analysis.imagefile import IMAGE_SUFFIXES, read_rgb
from edge.analysis.labels import LABELS


_ALIASES: dict[str, str] = {
    "benign": "benign",
    "hematogones": "benign",
    "early": "early_pre_b",
    "earlypreb": "early_pre_b",
    "pre": "pre_b",
    "preb": "pre_b",
    "pro": "pro_b",
    "prob": "pro_b",
}


class DatasetError(ValueError):
    """The folder cannot be used as a labelled dataset; the message names the folder."""


def label_for_folder(name: str) -> str | None:
    """Canonical label of a class folder name, or None if it is not a class folder."""
    key = re.sub(r"\[malignant\]", "", name.lower())
    key = re.sub(r"[^a-z]", "", key)
    return _ALIASES.get(key)


def file_number(path: Path) -> int | None:
    """The capture number in a file name (``WBC-Malignant-Pre-012.jpg`` -> 12).

    File numbers follow capture order, which is what the patient-proxy split uses.
    """
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str

    @property
    def key(self) -> str:
        """Identity of a sample across machines: ``label/filename``."""
        return f"{self.label}/{self.path.name}"

    @property
    def number(self) -> int | None:
        return file_number(self.path)


@dataclass
class Dataset:
    root: Path
    samples: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {label: sum(s.label == label for s in self.samples) for label in LABELS}


def number_blocks(samples: list[Sample], block_size: int) -> list[tuple[str, int]]:
    """Each sample's patient-proxy block: ``(label, first file number of the block)``.

    Blocks follow the capture sequence, not a grid: within a class, a gap in the file
    numbers (the dataset's curators held runs out, with a gap around each) always ends a
    block, and a run of consecutive numbers is cut every ``block_size`` fields counted from
    the run's own start. A remainder shorter than half a block joins the block before it,
    so no block is a sliver. Samples without a number form one block per class.
    """
    numbered: dict[str, list[int]] = {}
    for s in samples:
        if s.number is not None:
            numbered.setdefault(s.label, []).append(s.number)
    start_of: dict[tuple[str, int], int] = {}
    for label, numbers in numbered.items():
        numbers = sorted(set(numbers))
        runs: list[list[int]] = [[numbers[0]]]
        for n in numbers[1:]:
            if n == runs[-1][-1] + 1:
                runs[-1].append(n)
            else:
                runs.append([n])
        for run in runs:
            chunks = [run[i:i + block_size] for i in range(0, len(run), block_size)]
            if len(chunks) > 1 and len(chunks[-1]) < block_size / 2:
                chunks[-2].extend(chunks.pop())
            for chunk in chunks:
                for n in chunk:
                    start_of[(label, n)] = chunk[0]
    return [(s.label, start_of[(s.label, s.number)] if s.number is not None else -1) for s in samples]


def _class_root(root: Path) -> Path:
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() == "original":
            return child
    return root


def load_dataset(root: Path | str, verify: bool = True) -> Dataset:
    """Index a labelled folder. Unreadable and non-image files are reported and skipped;
    a missing or empty class is an error naming the folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    class_root = _class_root(root)
    folders: dict[str, Path] = {}
    for child in sorted(class_root.iterdir()):
        label = label_for_folder(child.name) if child.is_dir() else None
        if label is None:
            continue
        if label in folders:
            raise DatasetError(f"{class_root}: both {folders[label].name!r} and {child.name!r} map to class {label}")
        folders[label] = child
    missing = [label for label in LABELS if label not in folders]
    if missing:
        raise DatasetError(
            f"{class_root}: no folder for class(es) {', '.join(missing)}; expected class folders such as "
            "Benign/ Early/ Pre/ Pro/ (or Original/<class>/)"
        )
    samples: list[Sample] = []
    skipped: list[tuple[Path, str]] = []
    for label in LABELS:
        found = 0
        for path in sorted(folders[label].iterdir()):
            if not path.is_file():
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((path, "not an image file"))
                continue
            if verify:
                try:
                    read_rgb(path)
                except ValueError:
                    skipped.append((path, "unreadable image"))
                    continue
            samples.append(Sample(path, label))
            found += 1
        if found == 0:
            raise DatasetError(f"{folders[label]}: class {label} has no readable images")
    return Dataset(root=root, samples=samples, skipped=skipped)
