"""FER+ in its official on-disk layout: ``FER2013{Train,Valid,Test}/label.csv`` plus PNGs.

``label.csv`` has no header; each row is ``image_name, "(x, y, w, h)", 10 vote counts`` in the
order of ``VOTE_COLUMNS`` (the current ``generate_training_data.py`` leaves the box out: 11 columns
are read too). The majority protocol of the FER+ paper keeps 25,045 / 3,191 / 3,137 images in
8 classes.
"""
from __future__ import annotations

import csv
from pathlib import Path

VOTE_COLUMNS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                "contempt", "unknown", "NF"]
CLASSES = VOTE_COLUMNS[:8]
SPLIT_DIRS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}


def majority_label(votes: list[int]) -> int | None:
    """The FER+ majority label of one image, or None if it is dropped.

    Votes of 1 are noise and removed; the top class needs more than half of the remaining votes
    and must not be ``unknown`` or ``NF``.
    """
    votes = [v if v > 1 else 0 for v in votes]
    top = max(range(len(votes)), key=votes.__getitem__)
    if votes[top] == 0 or votes[top] <= sum(votes) / 2 or top >= len(CLASSES):
        return None
    return top


def read_split(root: str | Path, split: str) -> list[tuple[Path, int]]:
    """(image path, class index) pairs of one split under the majority protocol."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"FER+ has splits {list(SPLIT_DIRS)}, not {split!r}.")
    folder = Path(root) / SPLIT_DIRS[split]
    label_csv = folder / "label.csv"
    if not label_csv.is_file():
        raise FileNotFoundError(
            f"FER+ labels not found: {label_csv}. Expected the official layout "
            f"<root>/{{FER2013Train,FER2013Valid,FER2013Test}}/label.csv with the PNGs beside it "
            f"(as written by Microsoft's FERPlus generate_training_data.py)."
        )
    samples = []
    with open(label_csv, newline="") as f:
        for row in csv.reader(f):
            if len(row) not in (11, 12):
                raise ValueError(f"{label_csv}: expected 12 columns (name, box, 10 votes) or 11 (no box), got {row!r}")
            label = majority_label([int(v) for v in row[-10:]])
            if label is not None:
                samples.append((folder / row[0], label))
    return samples


def read(root: str | Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """The samples of one split and the 8 classes (the dataset registry's reader interface)."""
    return read_split(root, split), list(CLASSES)
