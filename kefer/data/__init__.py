"""Face datasets: one ``FaceDataset`` over (image, label) samples, built by name.

Datasets:
- ``ferplus``: the official FER+ layout (see ``ferplus.py``), 8 classes, majority labels.
- ``ckplus``: a folder with one sub-folder per class (as in ``../shared/data/ckplus``); only a
  ``test`` split, 7 classes by default (contempt dropped, as in the paper's cross-dataset protocol).
- ``folder``: any ``<root>/<class>/*`` tree, or ``<root>/{train,val,test}/<class>/*``.
Class names are mapped onto the shared vocabulary (``vocab.py``).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from . import ferplus
from .vocab import EXPRESSIONS, canonical

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
DATASETS = ("ferplus", "ckplus", "folder")
CKPLUS_CLASSES = [c for c in EXPRESSIONS if c != "contempt"]


def open_rgb(path) -> Image.Image:
    """Read an image file as 3-channel RGB (greyscale is replicated)."""
    with Image.open(path) as im:
        return im.convert("RGB")


class FaceDataset(Dataset):
    """Face images with integer labels over ``classes``.

    Unreadable images are skipped at construction and counted in ``skipped`` (never a crash).
    With ``preload`` the decoded images are kept in memory (FER+ is 48x48: about 70 MB).
    Items are ``(transform(image), label)``.
    """

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], transform=None,
                 preload: bool = True, desc: str = "images"):
        self.classes = list(classes)
        self.transform = transform
        self.samples, self.images, self.skipped = [], [], []
        for path, label in tqdm(samples, desc=f"reading {desc}", leave=False, mininterval=2):
            try:
                if preload:
                    self.images.append(np.asarray(open_rgb(path)))
                else:
                    with Image.open(path) as im:
                        im.verify()
            except (OSError, ValueError, SyntaxError) as e:
                self.skipped.append((str(path), str(e)))
                continue
            self.samples.append((Path(path), int(label)))
        if self.skipped:
            warnings.warn(f"{desc}: skipped {len(self.skipped)} unreadable image(s), e.g. {self.skipped[0][0]}")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def image(self, i: int) -> Image.Image:
        """The i-th image as RGB PIL, untransformed."""
        return Image.fromarray(self.images[i]) if self.images else open_rgb(self.samples[i][0])

    def __getitem__(self, i: int):
        img = self.image(i)
        return (self.transform(img) if self.transform else img), self.samples[i][1]


def read_folder(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """Samples of a ``<root>/<class>/<image>`` tree; folder names are mapped to the vocabulary.

    ``classes`` keeps only those classes, in that order; by default all folders, sorted in
    vocabulary order (unknown names after, alphabetically).
    """
    folders = {canonical(d.name): d for d in sorted(root.iterdir()) if d.is_dir()}
    if not folders:
        raise FileNotFoundError(f"No class sub-folders in {root}; expected <root>/<class name>/<images>.")
    if classes is None:
        order = {c: i for i, c in enumerate(EXPRESSIONS)}
        classes = sorted(folders, key=lambda c: (order.get(c, len(order)), c))
    classes = [canonical(c) for c in classes]
    missing = [c for c in classes if c not in folders]
    if missing:
        raise ValueError(f"{root} has no folder for class(es) {missing}; it has {sorted(folders)}.")
    samples = [
        (p, k)
        for k, c in enumerate(classes)
        for p in sorted(folders[c].iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    return samples, classes


def default_root(name: str) -> Path:
    """``$KEFER_DATA/<name>`` if set, else ``../shared/data/<name>`` next to the project."""
    if os.environ.get("KEFER_DATA"):
        return Path(os.environ["KEFER_DATA"]) / name
    return Path(__file__).resolve().parents[3] / "shared" / "data" / name


def sample(samples: list, n: int | None, seed: int = 0) -> list:
    """A seeded random ``n`` of ``samples`` (all of them if ``n`` is None or large enough)."""
    if n is None or n >= len(samples):
        return samples
    keep = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    return [samples[i] for i in sorted(keep.tolist())]


def build_dataset(name: str, root: str | Path | None, split: str, transform=None,
                  classes: list[str] | None = None, max_samples: int | None = None,
                  seed: int = 0) -> FaceDataset:
    """The ``split`` ('train', 'val' or 'test') of dataset ``name`` under ``root``.

    ``classes`` restricts and orders the classes; ``max_samples`` keeps a seeded random subset.
    """
    root = Path(root) if root else default_root(name)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Data root for {name!r} not found: {root}. Pass --data-root, or set KEFER_DATA to a "
            f"folder holding {name}/."
        )
    desc = f"{name}/{split}"
    if name == "ferplus":
        samples = ferplus.read_split(root, split)
        all_classes = ferplus.CLASSES
        if classes is not None:
            keep = [canonical(c) for c in classes]
            unknown = set(keep) - set(all_classes)
            if unknown:
                raise ValueError(f"FER+ has no class(es) {sorted(unknown)}; it has {all_classes}.")
            remap = {all_classes.index(c): k for k, c in enumerate(keep)}
            samples = [(p, remap[y]) for p, y in samples if y in remap]
            all_classes = keep
        return FaceDataset(sample(samples, max_samples, seed), all_classes, transform, desc=desc)
    if name in ("ckplus", "folder"):
        if name == "ckplus":
            if split != "test":
                raise ValueError("ckplus is a cross-dataset test set: only split 'test' exists.")
            classes = classes or CKPLUS_CLASSES
        elif (root / split).is_dir():
            root = root / split
        elif split != "test":
            raise FileNotFoundError(
                f"{root} has no {split}/ folder; a folder dataset for training needs "
                f"<root>/train/<class>/ and <root>/val/<class>/ (a flat <root>/<class>/ tree is test-only)."
            )
        samples, classes = read_folder(root, classes)
        return FaceDataset(sample(samples, max_samples, seed), classes, transform, desc=desc)
    raise ValueError(f"Unknown dataset {name!r}; choose one of {DATASETS}.")
