"""AffectNet (Mollahosseini et al., 2017), manually annotated part, in its download layout.

    <root>/Manually_Annotated_Images/<subDirectory_filePath>   e.g. 689/737db24....jpg
    <root>/training.csv, <root>/validation.csv                 (or in <root>/Manually_Annotated_file_lists/)

CSV header: subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,
valence,arousal. Expression codes 0-7 are classes (``CLASSES``); 8 None, 9 Uncertain and 10 No-Face
are dropped. Faces are cropped to their box. As in the paper, the official validation set is the
test split; a seeded, stratified ``val`` fraction of training is held out for model selection
(2% by default: about 5,700 images, the size of the official validation set).
"""
from __future__ import annotations

import csv
from pathlib import Path

from .splits import stratified_holdout

# Expression codes 0..7.
CLASSES = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
IMAGES = "Manually_Annotated_Images"
CSV_FOLDERS = ("", "Manually_Annotated_file_lists")
HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
          "expression", "valence", "arousal"]


def find_csv(root: Path, name: str) -> Path:
    """``root/name`` or ``root/Manually_Annotated_file_lists/name``."""
    for folder in CSV_FOLDERS:
        if (root / folder / name).is_file():
            return root / folder / name
    raise FileNotFoundError(
        f"AffectNet list {name} not found in {root} or {root / CSV_FOLDERS[1]}. Expected the download "
        f"layout: <root>/{IMAGES}/ with training.csv and validation.csv beside it."
    )


def read_csv(path: Path, images: Path) -> list[tuple[Path, int, tuple[int, int, int, int]]]:
    """(image path, class index, face box x, y, w, h) for each row with an expression code 0-7.

    A file without the header line (some copies of validation.csv) is read with the standard columns.
    """
    samples = []
    with open(path, newline="") as f:
        first = next(csv.reader(f), [])
        headerless = len(first) == len(HEADER) and first[6].strip().isdigit()
        if first != HEADER and not headerless:
            raise ValueError(f"{path}: expected the header {','.join(HEADER)}; got {','.join(first)}.")
        f.seek(0)
        for row in csv.DictReader(f, fieldnames=HEADER if headerless else None):
            label = int(row["expression"])
            if label < len(CLASSES):
                box = tuple(int(float(row[c])) for c in ("face_x", "face_y", "face_width", "face_height"))
                samples.append((images / row["subDirectory_filePath"], label, box))
    return samples


def read(root: str | Path, split: str, val: float = 0.02, seed: int = 0):
    """(image path, class index, face box) samples of ``split`` ('train', 'val' or 'test'), and the
    8 classes (the 7-class variant is these without contempt)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"AffectNet has splits train, val (held out of training) and test "
                         f"(the official validation set), not {split!r}.")
    root = Path(root)
    images = root / IMAGES
    if not images.is_dir():
        raise FileNotFoundError(f"AffectNet images not found: {images}. Expected the download layout: "
                                f"<root>/{IMAGES}/<subDirectory_filePath> with training.csv and validation.csv.")
    samples = read_csv(find_csv(root, "validation.csv" if split == "test" else "training.csv"), images)
    if split != "test":
        kept, held = stratified_holdout([label for _, label, _ in samples], float(val), int(seed))
        samples = [samples[i] for i in (held if split == "val" else kept)]
    return samples, list(CLASSES)
