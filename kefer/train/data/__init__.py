"""Face datasets: one ``FaceDataset`` over (image, label) samples, built by name.

Datasets (``READERS``; each reader returns a split's samples and the dataset's classes):
- ``ferplus``: the official FER+ layout (``ferplus.py``), 8 classes, majority labels.
- ``ckplus``: a folder with one sub-folder per class (as in ``../shared/data/ckplus``); only a
  ``test`` split.
- ``folder``: any ``<root>/<class>/*`` tree, or ``<root>/{train,val,test}/<class>/*``.
- ``rafdb``: RAF-DB basic (``rafdb.py``), 7 classes.
- ``affectnet7`` / ``affectnet8``: AffectNet (``affectnet.py``), without / with contempt.
- ``ckplus-original``: the CK+ release (``ckplus.py``), first and last frames of labelled sequences.
CK+ and ``affectnet7`` leave contempt out unless ``classes`` asks for it (the paper's 7 classes).
A name may carry its reader's options after a colon, e.g. ``rafdb:val=0.2,seed=1``,
``rafdb:images=original`` or ``ckplus-original:fold=1/10``.
Class names are mapped onto the shared vocabulary (``vocab.py``).
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from ...options import parse_kv
from ...io import data_home
from . import affectnet, ckplus, ferplus, rafdb
from ...vocab import EXPRESSIONS, canonical

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def open_rgb(path, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """Read an image file as 3-channel RGB (greyscale is replicated), cropped to ``box`` (x, y, w, h)."""
    with Image.open(path) as im:
        if box is not None:
            x, y, w, h = box
            im = im.crop((x, y, x + w, y + h))
        return im.convert("RGB")


class FaceDataset(Dataset):
    """Face images with integer labels over ``classes``.

    ``samples`` are (path, label) or (path, label, face box (x, y, w, h)) tuples.
    Unreadable images are skipped at construction and counted in ``skipped`` (never a crash).
    With ``preload`` the decoded images are kept in memory (FER+ is 48x48: about 70 MB).
    Items are ``(transform(image), label)``; with ``soft_targets`` [N, K] set, the label is the
    i-th row, a distribution over ``classes`` (e.g. FER+'s votes), instead of a class index.
    """

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], transform=None,
                 preload: bool = True, desc: str = "images"):
        self.classes = list(classes)
        self.transform = transform
        self.samples, self.boxes, self.images, self.skipped = [], [], [], []
        self.soft_targets: torch.Tensor | None = None
        for path, label, *box in tqdm(samples, desc=f"reading {desc}", leave=False, mininterval=2):
            box = box[0] if box else None
            try:
                if preload:
                    self.images.append(np.asarray(open_rgb(path, box)))
                else:
                    with Image.open(path) as im:
                        im.verify()
            except (OSError, ValueError, SyntaxError) as e:
                self.skipped.append((str(path), str(e)))
                continue
            self.samples.append((Path(path), int(label)))
            self.boxes.append(box)
        if self.skipped:
            warnings.warn(f"{desc}: skipped {len(self.skipped)} unreadable image(s), e.g. {self.skipped[0][0]}")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def image(self, i: int) -> Image.Image:
        """The i-th image as RGB PIL, untransformed."""
        return Image.fromarray(self.images[i]) if self.images else open_rgb(self.samples[i][0], self.boxes[i])

    def __getitem__(self, i: int):
        img = self.image(i)
        label = self.samples[i][1] if self.soft_targets is None else self.soft_targets[i]
        return (self.transform(img) if self.transform else img), label


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


def read_ckplus_folder(root: Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """The ``ckplus`` folder tree: a cross-dataset test set."""
    if split != "test":
        raise ValueError("ckplus is a cross-dataset test set: only split 'test' exists.")
    return read_folder(root)


def read_folder_split(root: Path, split: str, val: float | None = None, test: float | None = None,
                      seed: int = 0) -> tuple[list[tuple[Path, int]], list[str]]:
    """``<root>/<split>/<class>/*``. A flat ``<root>/<class>/*`` tree is the test split, or, with
    fractions ``val`` and ``test`` (``folder:val=0.1,test=0.2``), split per class, seeded."""
    if (root / split).is_dir():
        return read_folder(root / split)
    if val is not None or test is not None:
        return split_flat_folder(root, split, val or 0.0, test or 0.0, seed)
    if split != "test":
        raise FileNotFoundError(
            f"{root} has no {split}/ folder; a folder dataset for training needs <root>/train/<class>/ and "
            f"<root>/val/<class>/, or a flat <root>/<class>/ tree split for you with --dataset folder:val=0.1,test=0.2 "
            f"(a flat tree without those options is test-only).")
    return read_folder(root)


def split_flat_folder(root: Path, split: str, val: float, test: float, seed: int):
    """The ``split`` share of a flat ``<root>/<class>/*`` tree: of each class's images, in a seeded
    order, ``test`` and ``val`` (fractions, each at least one image when above 0) and the rest
    'train'. Raises ValueError naming the classes too small to split, with the minimum."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"folder: val and test are fractions of each class with val + test < 1, not {val}, {test}.")
    samples, classes = read_folder(root)
    minimum = 1 + (val > 0) + (test > 0)
    counts = np.bincount([k for _, k in samples], minlength=len(classes))
    small = {c: int(n) for c, n in zip(classes, counts) if n < minimum}
    if small:
        raise ValueError(f"{root} is too small to split into train/val/test: {small} image(s); each class needs at "
                         f"least {minimum} (one per split), and far more to learn from. Add images, or leave the "
                         f"class out with --classes.")
    rng = np.random.default_rng(seed)
    chosen = []
    for k, n in enumerate(counts):
        order = rng.permutation([s for s in samples if s[1] == k])
        n_test = max(1, round(test * n)) if test else 0
        n_val = max(1, round(val * n)) if val else 0
        share = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}[split]
        chosen.extend((Path(p), int(label)) for p, label in share)
    return chosen, classes


READERS = {
    "ferplus": ferplus.read,
    "ckplus": read_ckplus_folder,
    "folder": read_folder_split,
    "rafdb": rafdb.read,
    "affectnet7": affectnet.read,
    "affectnet8": affectnet.read,
    "ckplus-original": ckplus.read,
}
DATASETS = tuple(READERS)
WITHOUT_CONTEMPT = {"ckplus", "ckplus-original", "affectnet7"}
ON_DISK = {"affectnet7", "affectnet8"}  # too large to keep decoded in memory: read every epoch


def default_root(name: str) -> Path:
    """``$KEFER_DATA/<name>`` if set, else ``../shared/data/<name>`` next to the project."""
    return data_home() / name


def sample(samples: list, n: int | None, seed: int = 0) -> list:
    """A seeded random ``n`` of ``samples`` (all of them if ``n`` is None or large enough)."""
    if n is None or n >= len(samples):
        return samples
    keep = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    return [samples[i] for i in sorted(keep.tolist())]


def parse_name(name: str) -> tuple[str, dict]:
    """'rafdb:val=0.2,images=original' -> ('rafdb', {'val': 0.2, 'images': 'original'})."""
    base, _, text = name.partition(":")
    try:
        return base, parse_kv(text)
    except ValueError as e:
        raise ValueError(f"Dataset options of {name!r}: {e}") from None


def read(name: str, root: Path, split: str) -> tuple[list[tuple], list[str]]:
    """The samples of ``split`` and the classes, from the reader of dataset ``name`` (with options)."""
    base, options = parse_name(name)
    reader = READERS[base]
    accepted = list(inspect.signature(reader).parameters)[2:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"Dataset {base!r} has no option(s) {unknown}; it takes {accepted or 'none'}.")
    return reader(root, split, **options)


def restrict(samples: list[tuple], classes: list[str], keep: list[str], name: str) -> list[tuple]:
    """The samples of classes ``keep`` only, relabelled by their position in ``keep``."""
    unknown = [c for c in keep if c not in classes]
    if unknown:
        raise ValueError(f"{name} has no class(es) {unknown}; it has {classes}.")
    remap = {classes.index(c): k for k, c in enumerate(keep)}
    return [(s[0], remap[s[1]], *s[2:]) for s in samples if s[1] in remap]


def build_dataset(name: str, root: str | Path | None, split: str, transform=None,
                  classes: list[str] | None = None, max_samples: int | None = None,
                  seed: int = 0, labels: str = "majority") -> FaceDataset:
    """The ``split`` ('train', 'val' or 'test') of dataset ``name`` under ``root``.

    ``classes`` restricts and orders the classes; ``max_samples`` keeps a seeded random subset.
    ``labels="votes"`` (FER+ only) sets ``soft_targets`` to each image's annotator vote
    distribution over ``classes``; the images are those of the majority protocol.
    """
    if labels not in ("majority", "votes"):
        raise ValueError(f"labels must be 'majority' or 'votes', not {labels!r}.")
    base = parse_name(name)[0]
    if base not in READERS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {DATASETS}.")
    root = Path(root) if root else default_root(base)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Data root for {name!r} not found: {root}. Pass --data-root, or set KEFER_DATA to a "
            f"folder holding {base}/."
        )
    samples, all_classes = read(name, root, split)
    if classes is not None:
        keep = [canonical(c) for c in classes]
    elif base in WITHOUT_CONTEMPT:
        keep = [c for c in all_classes if c != "contempt"]
    else:
        keep = all_classes
    if labels == "votes" and base != "ferplus":
        raise ValueError(f"labels='votes' needs FER+'s annotator votes; {name} has one label per image.")
    samples = restrict(samples, all_classes, keep, name)
    dataset = FaceDataset(sample(samples, max_samples, seed), keep, transform, preload=base not in ON_DISK,
                          desc=f"{name}/{split}")
    if labels == "votes":
        votes = ferplus.read_votes(root, split)
        columns = [all_classes.index(c) for c in keep]
        q = torch.tensor([[votes[path][j] for j in columns] for path, _ in dataset.samples])
        dataset.soft_targets = q / q.sum(1, keepdim=True)
    return dataset
