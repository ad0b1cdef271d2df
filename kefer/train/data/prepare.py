"""Turn downloads into the layouts the loaders read.

    kefer prepare ferplus --fer2013-csv fer2013.csv --ferplus-csv fer2013new.csv --out DIR
    kefer prepare rafdb --root RAF-DB/basic --out DIR
    kefer prepare ckplus --root CK+ --out DIR

``ferplus`` writes the official FER+ layout, as Microsoft's ``generate_training_data.py`` and the
``label.csv`` files of its repository: ``FER2013{Train,Valid,Test}/label.csv`` (no header; name,
"(0, 0, 48, 48)", the 10 votes of ``fer2013new.csv``; sorted by name) and one lossless 48x48 PNG per
row of ``fer2013new.csv`` that has an image name (rows without one are not faces and are skipped).
Where ``fer2013new.csv`` names an image twice, the first row is kept for both the PNG and the votes
(Microsoft's script would overwrite the PNG with the second row's pixels).
``rafdb`` and ``ckplus`` align faces with MTCNN (the largest face, eyes levelled, square crop; the
centre of the image where no face is found) and write a root in the same layout, with the labels
and ``mtcnn.json`` (settings and the images without a face): RAF-DB's ``Image/original/`` photos
(use it with ``--dataset rafdb:images=original --data-root DIR``), or the CK+ frames the protocol
uses, the first and last of each labelled sequence (``--dataset ckplus-original --data-root DIR``).
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import ckplus, ferplus, rafdb

USAGE_DIRS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
FER2013_HEADER = ["emotion", "pixels", "Usage"]
FERPLUS_HEADER = ["Usage", "Image name", *ferplus.VOTE_COLUMNS]
BOX = "(0, 0, 48, 48)"


def read_table(path: Path, header: list[str]) -> list[list[str]]:
    """The rows of a CSV file after checking its header."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != header:
        found = ",".join(rows[0]) if rows else "nothing"
        raise ValueError(f"{path}: expected the header {','.join(header)}; got {found}.")
    return rows[1:]


def label_rows(votes: list[list[str]]) -> dict[str, list[list[str]]]:
    """The rows of each split's ``label.csv`` from the rows of ``fer2013new.csv``, sorted by name.

    A name listed twice (four are, in the published table) keeps its first row.
    """
    first = {}
    for usage, name, *counts in votes:
        if usage not in USAGE_DIRS:
            raise ValueError(f"Unknown Usage {usage!r} for {name!r}; expected one of {list(USAGE_DIRS)}.")
        if name.strip() and name.strip() not in first:
            first[name.strip()] = (USAGE_DIRS[usage], [name.strip(), BOX, *counts])
    out = {folder: [] for folder in USAGE_DIRS.values()}
    for name in sorted(first):
        folder, row = first[name]
        out[folder].append(row)
    return out


def prepare_ferplus(fer2013_csv: str | Path, ferplus_csv: str | Path, out: str | Path) -> dict[str, int]:
    """Write the FER+ layout into ``out``; returns the number of images per split folder."""
    pixels = read_table(Path(fer2013_csv), FER2013_HEADER)
    votes = read_table(Path(ferplus_csv), FERPLUS_HEADER)
    if len(pixels) != len(votes):
        raise ValueError(f"{fer2013_csv} has {len(pixels)} rows but {ferplus_csv} has {len(votes)}; "
                         f"they must be the same 35,887 FER2013 images in the same order.")
    labels = label_rows(votes)
    out = Path(out)
    for folder in USAGE_DIRS.values():
        (out / folder).mkdir(parents=True, exist_ok=True)
    written = set()
    for number, ((_, pixel_text, usage), (new_usage, name, *_)) in enumerate(
            tqdm(list(zip(pixels, votes)), desc="writing FER+ images", mininterval=2), 2):
        if usage != new_usage:
            raise ValueError(f"Row {number}: Usage {usage!r} in {fer2013_csv} but {new_usage!r} in {ferplus_csv}.")
        name = name.strip()
        if name and name not in written:
            written.add(name)
            values = pixel_text.split()
            if len(values) != 48 * 48:
                raise ValueError(f"Row {number} of {fer2013_csv}: expected 2304 pixel values, got {len(values)}.")
            image = np.array(values, dtype=np.uint8).reshape(48, 48)
            Image.fromarray(image).save(out / USAGE_DIRS[usage] / name, compress_level=0)
    counts = {}
    for folder, rows in labels.items():
        with open(out / folder / "label.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
        counts[folder] = len(rows)
    return counts


def align_faces(pairs: list[tuple[Path, Path]], out: Path, size: int, device: str = "cpu") -> dict:
    """Write an MTCNN crop of each (source, destination) image and ``out/mtcnn.json``, which lists
    the sources where no face was found (their centre square is written instead)."""
    from ...faces import FaceDetector, whole_image_face

    out.mkdir(parents=True, exist_ok=True)
    detector = FaceDetector(device=device, crop_size=size)
    no_face = []
    for source, destination in tqdm(pairs, desc="aligning faces", mininterval=2):
        rgb = np.asarray(Image.open(source).convert("RGB"))
        faces = detector.detect(rgb)
        if faces:
            crop = detector.align(rgb, faces[0])
        else:
            crop = whole_image_face(rgb, size).crop
            no_face.append(source.name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(destination, **({"quality": 95} if destination.suffix == ".jpg" else {}))
    report = {"aligner": "MTCNN (kefer.faces.FaceDetector), largest face", "size": size,
              "images": len(pairs), "no_face_centre_crop": no_face}
    (out / rafdb.ALIGNED_MARK).write_text(json.dumps(report, indent=2) + "\n")
    return report


def check_out(root: Path, out: Path) -> None:
    if out.resolve() == root.resolve():
        raise ValueError(f"--out must differ from --root ({root}): the crops would replace the originals.")


def prepare_rafdb(root: str | Path, out: str | Path, size: int = 224, device: str = "cpu") -> dict:
    """Write MTCNN crops of RAF-DB's original photos, with the labels, as a RAF-DB root in ``out``."""
    root, out = rafdb.find_root(root), Path(out)
    check_out(root, out)
    names = [name for name, _ in rafdb.read_labels(root)]
    missing = [name for name in names if not (root / "Image" / "original" / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} photo(s) listed in {root / rafdb.LABEL_FILE} are missing from "
                                f"{root / 'Image' / 'original'}, e.g. {missing[0]}.")
    (out / rafdb.LABEL_FILE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / rafdb.LABEL_FILE, out / rafdb.LABEL_FILE)
    originals = Path("Image") / "original"
    return align_faces([(root / originals / name, out / originals / name) for name in names], out, size, device)


def prepare_ckplus(root: str | Path, out: str | Path, size: int = 224, device: str = "cpu") -> dict:
    """Write MTCNN crops of the CK+ frames the protocol uses (first and last of each labelled
    sequence), with the emotion files, as a CK+ root in ``out``."""
    root, out = Path(root), Path(out)
    check_out(root, out)
    frames = [path for path, _ in ckplus.read_all(root)]
    for emotion_file in (root / ckplus.EMOTION).glob("S*/*/*_emotion.txt"):
        target = out / emotion_file.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(emotion_file, target)
    return align_faces([(path, out / path.relative_to(root)) for path in frames], out, size, device)
