"""RAF-DB, AffectNet, CK+ (original release), FER+ preparation and oversampling.

The datasets cannot be downloaded here, so each test writes a small copy of the download layout
(file names, CSV headers, label codes) and reads it back through ``build_dataset``.
"""
import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from kefer.train.data import DATASETS, build_dataset, parse_name
from kefer.cli.prepare import main as prepare_main
from kefer.train.data import affectnet, ckplus, prepare
from kefer.train.data.ferplus import read_split
from kefer.train.loop import make_loader

RAF_NAMES = ["surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"]
CPU = torch.device("cpu")


def save_image(path, value=128, size=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)


# --- RAF-DB -------------------------------------------------------------------------------------

@pytest.fixture
def raf_root(tmp_path):
    """RAF-DB 'basic': 10 train and 2 test images per label 1..7; pixel value = 30 * label."""
    root = tmp_path / "RAF-DB" / "basic"
    lines = []
    for part, per_class in (("train", 10), ("test", 2)):
        for i in range(7 * per_class):
            name, label = f"{part}_{i + 1:05d}.jpg", i % 7 + 1
            lines.append(f"{name} {label}")
            save_image(root / "Image" / "aligned" / f"{part}_{i + 1:05d}_aligned.jpg", 30 * label)
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def test_rafdb_labels_and_class_order(raf_root):
    ds = build_dataset("rafdb", raf_root, "test")
    assert ds.classes == RAF_NAMES and len(ds) == 14
    path, label = ds.samples[4]
    assert path.name == "test_00005_aligned.jpg" and ds.classes[label] == "sadness"   # code 5
    assert abs(int(np.asarray(ds[4][0])[0, 0, 0]) - 150) <= 3                        # its own image


def test_rafdb_validation_is_a_stratified_seeded_slice_of_train(raf_root):
    train = build_dataset("rafdb", raf_root, "train", seed=3)
    val = build_dataset("rafdb", raf_root, "val", seed=7)
    train_paths, val_paths = {p for p, _ in train.samples}, {p for p, _ in val.samples}
    assert not train_paths & val_paths and len(train_paths | val_paths) == 70
    assert Counter(val.targets) == {k: 1 for k in range(7)}                   # 10% of each class
    assert Counter(build_dataset("rafdb:val=0.2", raf_root, "val").targets) == {k: 2 for k in range(7)}
    other = build_dataset("rafdb:seed=1", raf_root, "val")
    assert {p for p, _ in other.samples} != val_paths


def test_rafdb_root_may_be_the_folder_above_basic(raf_root):
    assert len(build_dataset("rafdb", raf_root.parent, "test")) == 14


def test_rafdb_layout_errors_name_the_expected_files(raf_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="list_patition_label.txt"):
        build_dataset("rafdb", tmp_path / "RAF-DB" / "basic" / "Image", "train")
    with pytest.raises(FileNotFoundError, match="prepare rafdb"):
        build_dataset("rafdb:images=original", raf_root, "train")
    with pytest.raises(ValueError, match="no option"):
        build_dataset("rafdb:fold=1/5", raf_root, "train")
    (raf_root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 8\n")
    with pytest.raises(ValueError, match="label 1-7"):
        build_dataset("rafdb", raf_root, "train")


def test_rafdb_missing_images_folder(raf_root):
    (raf_root / "Image" / "aligned").rename(raf_root / "Image" / "elsewhere")
    with pytest.raises(FileNotFoundError, match="train_00001_aligned.jpg"):
        build_dataset("rafdb", raf_root, "test")


# --- AffectNet ----------------------------------------------------------------------------------

AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                    "expression,valence,arousal")


def write_affectnet(root, csv_folder=""):
    """Codes 0..10 three times in training.csv, once in validation.csv. Each 40x30 image is black
    with a white face box at (5, 4), 20x16."""
    for csv_name, repeats in (("training.csv", 3), ("validation.csv", 1)):
        lines = [AFFECTNET_HEADER]
        for i in range(11 * repeats):
            rel = f"{i % 4}/{csv_name[:5]}{i:03d}.jpg"
            image = np.zeros((30, 40), np.uint8)
            image[4:20, 5:25] = 255
            (root / affectnet.IMAGES / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / affectnet.IMAGES / rel, quality=100)
            lines.append(f"{rel},5,4,20,16,1.0;2.0;3.0,{i % 11},0.1,-0.2")
        (root / csv_folder).mkdir(parents=True, exist_ok=True)
        (root / csv_folder / csv_name).write_text("\n".join(lines) + "\n")
    return root


def test_affectnet8_drops_codes_above_7_and_crops_the_face(tmp_path):
    root = write_affectnet(tmp_path)
    test = build_dataset("affectnet8", root, "test")
    assert test.classes == ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
    assert sorted(test.targets) == list(range(8))          # codes 8, 9, 10 dropped
    face = np.asarray(test[0][0])
    assert face.shape == (16, 20, 3) and face.min() > 200   # the box only


def test_affectnet7_leaves_contempt_out(tmp_path):
    test = build_dataset("affectnet7", write_affectnet(tmp_path), "test")
    assert "contempt" not in test.classes and sorted(test.targets) == list(range(7))


def test_affectnet_holds_out_validation_from_training(tmp_path):
    root = write_affectnet(tmp_path, csv_folder="Manually_Annotated_file_lists")
    train = build_dataset("affectnet8:val=0.34", root, "train")
    val = build_dataset("affectnet8:val=0.34", root, "val")
    assert len(train) + len(val) == 24 and Counter(val.targets) == {k: 1 for k in range(8)}
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    assert all(p.name.startswith("train") for p, _ in train.samples + val.samples)


def test_affectnet_reads_a_validation_csv_without_header(tmp_path):
    root = write_affectnet(tmp_path)
    lines = (root / "validation.csv").read_text().splitlines()
    (root / "validation.csv").write_text("\n".join(lines[1:]) + "\n")
    assert sorted(build_dataset("affectnet8", root, "test").targets) == list(range(8))


def test_affectnet_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Manually_Annotated_Images"):
        build_dataset("affectnet8", tmp_path, "test")
    (tmp_path / affectnet.IMAGES).mkdir()
    with pytest.raises(FileNotFoundError, match="validation.csv"):
        build_dataset("affectnet8", tmp_path, "test")
    (tmp_path / "validation.csv").write_text("file,label\na.jpg,1\n")
    with pytest.raises(ValueError, match="subDirectory_filePath,face_x"):
        build_dataset("affectnet8", tmp_path, "test")


# --- CK+ original release -----------------------------------------------------------------------

CK_CODES = {"S005": [3, None], "S010": [2, 7], "S011": [1, 5], "S014": [6, 4], "S022": [0, 5], "S026": [7, 1]}


@pytest.fixture
def ck_root(tmp_path):
    """Six subjects with two sequences of 4 frames each; a None code is an unlabelled sequence."""
    root = tmp_path / "CK+"
    for subject, codes in CK_CODES.items():
        for s, code in enumerate(codes, 1):
            seq = f"{s:03d}"
            for f in range(1, 5):
                save_image(root / ckplus.FRAMES / subject / seq / f"{subject}_{seq}_{f:08d}.png", 40 * f)
            if code is not None:
                path = root / ckplus.EMOTION / subject / seq / f"{subject}_{seq}_00000004_emotion.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"   {code:.7e}\n")
    return root


def test_ckplus_original_first_frame_neutral_last_frame_labelled(ck_root):
    ds = build_dataset("ckplus-original", ck_root, "test")
    assert ds.classes == ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    labelled, contempt = 11, 1
    assert len(ds) == 2 * labelled - contempt                 # 636 = 2 * 327 - 18 on the real data
    names = {p.name: ds.classes[y] for p, y in ds.samples}
    assert names["S005_001_00000001.png"] == "neutral" and names["S005_001_00000004.png"] == "disgust"
    assert names["S010_001_00000001.png"] == "neutral" and "S010_001_00000004.png" not in names
    assert "S005_002_00000001.png" not in names                # unlabelled sequence
    with_contempt = build_dataset("ckplus-original", ck_root, "test", classes=ckplus.CLASSES)
    assert len(with_contempt) == 2 * labelled


def test_ckplus_original_folds_keep_each_subject_on_one_side(ck_root):
    sides = {split: build_dataset("ckplus-original:fold=2/3", ck_root, split) for split in ("train", "val", "test")}
    subjects = {split: {p.parts[-3] for p, _ in ds.samples} for split, ds in sides.items()}
    assert subjects["test"] and subjects["val"] and subjects["train"]
    assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                or subjects["val"] & subjects["test"])
    assert sum(len(ds) for ds in sides.values()) == 21
    tests = {k: {p.parts[-3] for p, _ in build_dataset(f"ckplus-original:fold={k}/3", ck_root, "test").samples}
             for k in (1, 2, 3)}
    assert set.union(*tests.values()) == set(CK_CODES) and sum(map(len, tests.values())) == 6


def test_ckplus_original_errors(ck_root, tmp_path):
    with pytest.raises(ValueError, match="fold=1/10"):
        build_dataset("ckplus-original", ck_root, "train")
    with pytest.raises(ValueError, match="k/n"):
        build_dataset("ckplus-original:fold=4/3", ck_root, "test")
    with pytest.raises(FileNotFoundError, match="cohn-kanade-images"):
        build_dataset("ckplus-original", tmp_path, "test")
    (ck_root / ckplus.EMOTION / "S005" / "001" / "S005_001_00000004_emotion.txt").write_text("happy\n")
    with pytest.raises(ValueError, match="emotion code"):
        build_dataset("ckplus-original", ck_root, "test")


# --- registry -----------------------------------------------------------------------------------

def test_every_dataset_is_registered_and_names_carry_options(tmp_path):
    assert set(DATASETS) >= {"ferplus", "ckplus", "folder", "rafdb", "affectnet7", "affectnet8", "ckplus-original"}
    options = {"val": 0.2, "seed": 3, "images": "original"}
    assert parse_name("rafdb:val=0.2,seed=3,images=original") == ("rafdb", options)
    assert parse_name("ckplus-original:fold=1/10") == ("ckplus-original", {"fold": "1/10"})
    with pytest.raises(ValueError, match="key=value"):
        parse_name("rafdb:0.2")
    with pytest.raises(FileNotFoundError, match="--data-root"):
        build_dataset("affectnet7:val=0.1", tmp_path / "nope", "train")


# --- class-balanced oversampling ----------------------------------------------------------------

class Labels(torch.utils.data.Dataset):
    def __init__(self, targets):
        self.targets = targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(1), self.targets[i]


def rare_fraction(balance: str) -> float:
    loader = make_loader(Labels([0] * 900 + [1] * 100), 100, True, CPU, 0, seed=0, balance=balance)
    labels = torch.cat([y for _, y in loader])
    return float((labels == 1).float().mean())


def test_oversampling_balances_the_classes():
    assert rare_fraction("none") == pytest.approx(0.1)
    assert rare_fraction("oversample") == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ValueError, match="oversample"):
        make_loader(Labels([0, 1]), 2, True, CPU, 0, balance="smote")


# --- FER+ preparation ---------------------------------------------------------------------------

FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def write_fer2013(path, rows):
    """fer2013.csv with (emotion, uniform pixel value, Usage) rows."""
    lines = ["emotion,pixels,Usage"] + [f"{e},{' '.join([str(v)] * 2304)},{u}" for e, v, u in rows]
    path.write_text("\n".join(lines) + "\n")


def test_prepare_ferplus_writes_the_official_layout(tmp_path):
    usages = ["Training", "Training", "Training", "PublicTest", "PrivateTest", "PrivateTest"]
    write_fer2013(tmp_path / "fer2013.csv", [(3, 10 * i, u) for i, u in enumerate(usages)])
    names = ["fer0000000.png", "fer0000001.png", "", "fer0000003.png", "fer0000004.png", "fer0000005.png"]
    votes = ["8,0,0,0,0,0,0,0,2,0", "0,10,0,0,0,0,0,0,0,0", "0,0,0,0,0,0,0,0,0,10",
             "0,0,6,0,0,0,0,0,4,0", "4,4,0,0,0,0,0,0,2,0", "0,0,0,0,0,0,0,0,0,10"]
    rows = [f"{u},{n},{v}" for u, n, v in zip(usages, names, votes)]
    (tmp_path / "fer2013new.csv").write_text("\n".join([FERPLUS_HEADER, *rows]) + "\n")
    out = tmp_path / "ferplus"
    assert prepare_main(["ferplus", "--fer2013-csv", str(tmp_path / "fer2013.csv"),
                         "--ferplus-csv", str(tmp_path / "fer2013new.csv"), "--out", str(out)]) == 0

    assert (out / "FER2013Train" / "label.csv").read_text() == (
        'fer0000000.png,"(0, 0, 48, 48)",8,0,0,0,0,0,0,0,2,0\n'
        'fer0000001.png,"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0\n')
    assert sorted(p.name for p in (out / "FER2013Train").iterdir()) == ["fer0000000.png", "fer0000001.png", "label.csv"]
    assert sorted(p.name for p in (out / "FER2013Test").glob("*.png")) == ["fer0000004.png", "fer0000005.png"]
    image = Image.open(out / "FER2013Valid" / "fer0000003.png")
    assert image.mode == "L" and image.size == (48, 48) and np.asarray(image).max() == np.asarray(image).min() == 30
    assert [label for _, label in read_split(out, "train")] == [0, 1]          # neutral, happiness
    val = build_dataset("ferplus", out, "val")
    assert len(val) == 1 and val.classes[val.targets[0]] == "surprise"
    assert len(read_split(out, "test")) == 0                                   # a tie and a non-face


def test_prepare_ferplus_checks_the_inputs(tmp_path):
    write_fer2013(tmp_path / "fer2013.csv", [(0, 1, "Training")])
    (tmp_path / "fer2013new.csv").write_text(FERPLUS_HEADER + "\n")
    with pytest.raises(ValueError, match="rows"):
        prepare.prepare_ferplus(tmp_path / "fer2013.csv", tmp_path / "fer2013new.csv", tmp_path / "out")
    (tmp_path / "fer2013new.csv").write_text("Usage,Image name,happy\nTraining,fer0000000.png,1\n")
    with pytest.raises(ValueError, match="Usage,Image name,neutral"):
        prepare.prepare_ferplus(tmp_path / "fer2013.csv", tmp_path / "fer2013new.csv", tmp_path / "out")
    assert prepare_main(["ferplus", "--fer2013-csv", str(tmp_path / "missing.csv"),
                         "--ferplus-csv", str(tmp_path / "fer2013new.csv"), "--out", str(tmp_path)]) == 2


def test_ferplus_reads_the_label_csv_of_the_current_microsoft_script(tmp_path):
    (tmp_path / "FER2013Valid").mkdir()
    (tmp_path / "FER2013Valid" / "label.csv").write_text("fer0028638.png,0,10,0,0,0,0,0,0,0,0\r\n")  # no box
    assert read_split(tmp_path, "val") == [(tmp_path / "FER2013Valid" / "fer0028638.png", 1)]


def test_prepared_labels_match_the_real_ferplus_layout(ferplus_root):
    """The real fer2013new.csv against the real label.csv files (Microsoft's repository): the same
    images in the same splits, order and format. The votes of 1,601 images differ because the
    repository's label.csv files and fer2013new.csv are two releases of the votes (prepare uses
    fer2013new.csv); this pins that count so any change in how votes are copied shows up."""
    votes = prepare.read_table(ferplus_root / "fer2013new.csv", prepare.FERPLUS_HEADER)
    differing = {}
    for folder, rows in prepare.label_rows(votes).items():
        with open(ferplus_root / folder / "label.csv", newline="") as f:
            real = list(csv.reader(f))
        assert [row[:2] for row in rows] == [row[:2] for row in real]
        differing[folder] = sum(mine != theirs for mine, theirs in zip(rows, real))
    assert differing == {"FER2013Train": 1073, "FER2013Valid": 246, "FER2013Test": 282}


def test_prepare_ferplus_on_real_rows_with_synthetic_pixels(ferplus_root, tmp_path):
    with open(ferplus_root / "fer2013new.csv", newline="") as f:
        table = list(csv.reader(f))
    rows = table[1:60] + table[28710:28720] + table[32299:32309]          # all three splits, empty names
    with open(tmp_path / "fer2013new.csv", "w", newline="") as f:
        csv.writer(f).writerows([table[0], *rows])
    write_fer2013(tmp_path / "fer2013.csv", [(0, i, row[0]) for i, row in enumerate(rows)])
    prepare.prepare_ferplus(tmp_path / "fer2013.csv", tmp_path / "fer2013new.csv", tmp_path / "out")
    for folder in prepare.USAGE_DIRS.values():
        written = (tmp_path / "out" / folder / "label.csv").read_text().splitlines()
        expected = [f'{r[1]},"(0, 0, 48, 48)",{",".join(r[2:])}' for r in rows
                    if r[1] and prepare.USAGE_DIRS[r[0]] == folder]
        assert written == expected and written
    names = {r[1] for r in rows if r[1]}
    assert sum(1 for _ in (tmp_path / "out").glob("*/*.png")) == len(names) < len(rows)


# --- RAF-DB alignment with MTCNN ----------------------------------------------------------------

def face_photo(ckplus_root, size=(320, 240)) -> Image.Image:
    """A grey photo with a real CK+ face, upscaled to 120 px, in it."""
    face = Image.open(sorted((ckplus_root / "happiness").glob("*.png"))[0]).convert("RGB").resize((120, 120))
    photo = Image.new("RGB", size, (110, 110, 110))
    photo.paste(face, (100, 60))
    return photo


def test_prepare_rafdb_aligns_faces_with_mtcnn(ckplus_root, tmp_path):
    root = tmp_path / "basic"
    (root / "Image" / "original").mkdir(parents=True)
    face_photo(ckplus_root).save(root / "Image" / "original" / "train_00001.jpg", quality=95)
    Image.new("RGB", (200, 150), (110, 110, 110)).save(root / "Image" / "original" / "test_00001.jpg")
    (root / "EmoLabel").mkdir()
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 4\ntest_00001.jpg 7\n")
    with pytest.raises(ValueError, match="--out must differ"):
        prepare.prepare_rafdb(root, root)

    out = tmp_path / "aligned" / "basic"
    assert prepare_main(["rafdb", "--root", str(root), "--out", str(out), "--size", "64"]) == 0
    report = json.loads((out / "mtcnn.json").read_text())
    assert report["images"] == 2 and report["no_face_centre_crop"] == ["test_00001.jpg"]
    crop = np.asarray(Image.open(out / "Image" / "original" / "train_00001.jpg"))
    assert crop.shape == (64, 64, 3) and crop.std() > 20          # a face, not the grey background
    test = build_dataset("rafdb:images=original", out, "test")
    assert len(test) == 1 and test.classes[test.targets[0]] == "neutral"


def test_prepare_ckplus_aligns_the_protocol_frames(ckplus_root, ck_root, tmp_path):
    photo = face_photo(ckplus_root)
    for frame in (ck_root / ckplus.FRAMES).glob("*/*/*.png"):
        photo.save(frame)
    out = tmp_path / "CK+aligned"
    assert prepare_main(["ckplus", "--root", str(ck_root), "--out", str(out), "--size", "48"]) == 0
    assert json.loads((out / "mtcnn.json").read_text())["no_face_centre_crop"] == []
    assert len(list(out.glob(f"{ckplus.FRAMES}/*/*/*.png"))) == 22      # first and last of 11 sequences
    before = build_dataset("ckplus-original", ck_root, "test")
    after = build_dataset("ckplus-original", out, "test")
    relative = [(p.relative_to(out), y) for p, y in after.samples]
    assert relative == [(p.relative_to(ck_root), y) for p, y in before.samples]
    assert after.image(0).size == (48, 48)
