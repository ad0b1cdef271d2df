"""CK+ (Lucey et al., 2010) in its original release layout.

    <root>/cohn-kanade-images/S005/001/S005_001_00000001.png ...   every frame of every sequence
    <root>/Emotion/S005/001/S005_001_00000011_emotion.txt          one float code per labelled sequence

Codes: ``CLASSES`` (0 neutral ... 7 surprise). The paper's protocol: of each labelled sequence, the
first frame is neutral and the last is the labelled expression (636 images on the real data with
contempt dropped, the default). Without ``fold`` all of it is a test set (cross-dataset); with
``fold='k/n'`` the subjects are dealt into n seeded folds: fold k is test, fold k+1 validation, the
rest training, so no subject is on two sides. The frames are whole 640x490 camera images: for the
paper's MTCNN-aligned faces, read the root written by ``kefer prepare ckplus``.
"""
from __future__ import annotations

from pathlib import Path

from .splits import parse_fold, subject_folds

CLASSES = ["neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]
FRAMES, EMOTION = "cohn-kanade-images", "Emotion"


def read_code(path: Path) -> int:
    """The class index in an ``*_emotion.txt`` file (e.g. '   3.0000000e+00')."""
    text = path.read_text().strip()
    try:
        code = float(text)
    except ValueError:
        code = -1.0
    if code != int(code) or not 0 <= code < len(CLASSES):
        raise ValueError(f"{path}: expected one emotion code 0-7, got {text!r}")
    return int(code)


def read_all(root: Path) -> list[tuple[Path, int]]:
    """(frame, class index): first frame neutral and last frame labelled, per labelled sequence."""
    if not (root / FRAMES).is_dir() or not (root / EMOTION).is_dir():
        raise FileNotFoundError(
            f"CK+ not found in {root}. Expected the original release layout: "
            f"<root>/{FRAMES}/S005/001/S005_001_00000001.png ... and "
            f"<root>/{EMOTION}/S005/001/S005_001_00000011_emotion.txt."
        )
    samples = []
    for emotion_file in sorted((root / EMOTION).glob("S*/*/*_emotion.txt")):
        sequence = emotion_file.parent.relative_to(root / EMOTION)
        frames = sorted((root / FRAMES / sequence).glob("*.png"))
        if not frames:
            raise FileNotFoundError(f"{emotion_file} labels sequence {sequence}, but "
                                    f"{root / FRAMES / sequence} has no PNG frames.")
        samples += [(frames[0], CLASSES.index("neutral")), (frames[-1], read_code(emotion_file))]
    if not samples:
        raise FileNotFoundError(f"No labelled sequences in {root / EMOTION}: expected S*/*/*_emotion.txt files.")
    return samples


def read(root: str | Path, split: str, fold: str | None = None, seed: int = 0):
    """(frame, class index) pairs of ``split``, and the 8 classes."""
    samples = read_all(Path(root))
    if fold is None:
        if split != "test":
            raise ValueError("ckplus-original without a fold is a cross-dataset test set (split 'test'); "
                             "to train on it, choose subject folds, e.g. --dataset ckplus-original:fold=1/10.")
        return samples, list(CLASSES)
    if split not in ("train", "val", "test"):
        raise ValueError(f"CK+ folds have splits train, val and test, not {split!r}.")
    k, n = parse_fold(fold)
    side = subject_folds([path.parent.parent.name for path, _ in samples], k, n, int(seed))
    return [(path, label) for path, label in samples if side[path.parent.parent.name] == split], list(CLASSES)
