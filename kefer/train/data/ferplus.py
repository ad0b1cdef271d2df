"""FER+ in its official on-disk layout: ``FER2013{Train,Valid,Test}/label.csv`` plus PNGs.

``label.csv`` has no header; each row is ``image_name, "(x, y, w, h)", 10 vote counts`` in the
order of ``VOTE_COLUMNS`` (the current ``generate_training_data.py`` leaves the box out: 11 columns
are read too). The majority protocol of the FER+ paper keeps 25,045 / 3,191 / 3,137 images in
8 classes. ``read_votes`` gives each kept image's vote distribution instead (``--labels votes``).
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


def vote_distribution(votes: list[int]) -> list[float]:
    """The 8-class label distribution of one image: votes of 1 dropped (noise, as in
    ``majority_label``), ``unknown`` and ``NF`` left out, normalised to sum 1. Where a majority label
    exists it is this distribution's unique argmax."""
    kept = [v if v > 1 else 0 for v in votes[:len(CLASSES)]]
    total = sum(kept)
    return [v / total for v in kept] if total else [0.0] * len(CLASSES)


def _rows(root: str | Path, split: str):
    """(image path, 10 vote counts) for each row of one split's label.csv."""
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
    with open(label_csv, newline="") as f:
        for row in csv.reader(f):
            if len(row) not in (11, 12):
                raise ValueError(f"{label_csv}: expected 12 columns (name, box, 10 votes) or 11 (no box), got {row!r}")
            yield folder / row[0], [int(v) for v in row[-10:]]


def read_split(root: str | Path, split: str) -> list[tuple[Path, int]]:
    """(image path, class index) pairs of one split under the majority protocol."""
    samples = []
    for path, votes in _rows(root, split):
        label = majority_label(votes)
        if label is not None:
            samples.append((path, label))
    return samples


def read_votes(root: str | Path, split: str) -> dict[Path, list[float]]:
    """Image path -> its 8-class vote distribution, for the images the majority protocol keeps."""
    return {path: vote_distribution(votes) for path, votes in _rows(root, split) if majority_label(votes) is not None}


def read(root: str | Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """The samples of one split and the 8 classes (the dataset registry's reader interface)."""
    return read_split(root, split), list(CLASSES)
