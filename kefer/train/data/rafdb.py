"""RAF-DB basic (Li et al., 2017) in its download layout, 7 classes.

    <root>/EmoLabel/list_patition_label.txt     lines 'train_00001.jpg 5', 'test_0001.jpg 7'
    <root>/Image/aligned/train_00001_aligned.jpg  the official 100x100 aligned faces
    <root>/Image/original/train_00001.jpg          the whole photos

``<root>`` is the ``basic`` folder (a root holding ``basic/`` works too). RAF-DB has train and test
only: a seeded, stratified ``val`` fraction of train is held out for model selection.
``images='original'`` reads ``Image/original/`` of a root written by
``kefer prepare rafdb`` (MTCNN crops of the photos, marked by ``mtcnn.json``).
"""
from __future__ import annotations

from pathlib import Path

from .splits import stratified_holdout

# Label codes 1..7 in RAF order.
CLASSES = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
ALIGNED_MARK = "mtcnn.json"


def find_root(root: str | Path) -> Path:
    """``root`` itself, or ``root/basic`` when the labels are there."""
    root = Path(root)
    if not (root / LABEL_FILE).is_file() and (root / "basic" / LABEL_FILE).is_file():
        return root / "basic"
    return root


def image_path(root: Path, name: str, images: str) -> Path:
    """Where the image listed as ``name`` (e.g. 'train_00001.jpg') lives."""
    stem = Path(name).stem
    if images == "aligned":
        return root / "Image" / "aligned" / f"{stem}_aligned.jpg"
    return root / "Image" / "original" / name


def read_labels(root: Path) -> list[tuple[str, int]]:
    """(image name, class index) for every line of the label file."""
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise FileNotFoundError(
            f"RAF-DB labels not found: {label_file}. Expected the 'basic' download layout: "
            f"<root>/EmoLabel/list_patition_label.txt and <root>/Image/aligned/<name>_aligned.jpg."
        )
    rows = []
    for number, line in enumerate(label_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in {"1", "2", "3", "4", "5", "6", "7"}:
            raise ValueError(f"{label_file}:{number}: expected '<name>.jpg <label 1-7>', got {line!r}")
        rows.append((parts[0], int(parts[1]) - 1))
    return rows


def read(root: str | Path, split: str, images: str = "aligned", val: float = 0.1,
         seed: int = 0) -> tuple[list[tuple[Path, int]], list[str]]:
    """(image path, class index) pairs of ``split`` ('train', 'val' or 'test'), and the classes."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"RAF-DB has splits train, val (held out of train) and test, not {split!r}.")
    if images not in ("aligned", "original"):
        raise ValueError(f"RAF-DB images are 'aligned' or 'original', not {images!r}.")
    root = find_root(root)
    rows = read_labels(root)
    folder = root / "Image" / images
    if images == "original" and not (root / ALIGNED_MARK).is_file():
        raise FileNotFoundError(
            f"images=original needs MTCNN-aligned faces, and {root} has no {ALIGNED_MARK}: its photos are "
            f"not aligned. Align them first: kefer prepare rafdb --root {root} --out DIR, "
            f"then use --data-root DIR."
        )
    if not folder.is_dir():
        raise FileNotFoundError(f"RAF-DB images not found: {folder}. Expected e.g. "
                                f"{image_path(root, 'train_00001.jpg', images)}.")
    part = "test" if split == "test" else "train"
    samples = [(image_path(root, name, images), label) for name, label in rows if name.startswith(part + "_")]
    if split != "test":
        kept, held = stratified_holdout([label for _, label in samples], float(val), int(seed))
        samples = [samples[i] for i in (held if split == "val" else kept)]
    return samples, list(CLASSES)
