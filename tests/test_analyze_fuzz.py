"""Fuzzed inputs: any size, any PIL mode, truncated and empty files, a text file named .mp4, a
video with no frame, link loops. Each is "no face found" or a clear per-file message, never a
crash, and every good file's rows are written (issue 28)."""
from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import kefer
from kefer.analysis import StreamAnalyzer
from kefer.cli import main as cli
from kefer.collection import collect

SIZES = [(1, 1), (5, 5), (12, 12), (11, 13), (19, 19), (20, 20), (21, 21), (39, 40), (41, 41), (1, 3000),
         (3000, 2), (64, 48)]


def face_image(ckplus_root, cls: str = "happiness") -> Image.Image:
    """A real CK+ face, upscaled to 140 px, on a 240x200 grey canvas (small: quick to search)."""
    crop = Image.open(sorted((ckplus_root / cls).glob("*.png"))[0]).convert("RGB").resize((140, 140), Image.BICUBIC)
    canvas = Image.new("RGB", (240, 200), (118, 118, 118))
    canvas.paste(crop, (50, 30))
    return canvas


def as_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in PIL ``mode`` (through RGB or L where PIL has no direct conversion)."""
    for via in (None, "L", "RGB", "I", "LA"):
        try:
            return (image.convert(via) if via else image).convert(mode)
        except (ValueError, OSError):
            continue
    return Image.new(mode, image.size)


def save_somehow(image: Image.Image, stem) -> str | None:
    """Save in the first format that stores the image's mode as it is; None when none does."""
    for suffix in (".png", ".tiff", ".webp", ".jpg"):
        path = f"{stem}{suffix}"
        try:
            image.save(path)
        except (OSError, ValueError, KeyError):
            if os.path.exists(path):
                os.remove(path)
            continue
        with Image.open(path) as back:
            if back.mode == image.mode:
                return path
        os.remove(path)
    return None


@pytest.fixture(scope="module")
def rec():
    return kefer.load("fast")


def test_every_size_is_an_answer_never_a_crash(rec):
    stream = StreamAnalyzer(rec)
    for h, w in SIZES:
        rgb = np.full((h, w, 3), 128, np.uint8)
        assert rec.analyze(rgb) == [], (h, w)
        assert stream.update(rgb) == [], (h, w)


def test_every_pil_mode_no_file_format_stores_is_read_in_memory(rec, ckplus_root, tmp_path):
    face = face_image(ckplus_root)
    unsaved = [m for m in Image.MODES if save_somehow(as_mode(face, m), tmp_path / "probe") is None]
    assert "La" in unsaved and "HSV" in unsaved   # the folder test below has the others as files
    for mode in unsaved:
        assert len(rec.analyze(as_mode(face, mode))) == 1, mode


def test_a_folder_of_broken_inputs_reports_each_and_keeps_every_good_row(ckplus_root, tmp_path, caplog):
    folder = tmp_path / "in"
    (folder / "deeper").mkdir(parents=True)
    face = face_image(ckplus_root)
    face.save(folder / "a_good.png")
    face.save(folder / "zz_good.jpg")
    for h, w in SIZES:
        Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(folder / f"size_{h}x{w}.png")
    Image.new("RGB", (8000, 6000), (90, 90, 90)).save(folder / "huge.jpg", quality=50)
    modes = {m: save_somehow(as_mode(face, m), folder / f"mode_{m.replace(';', '_')}") for m in Image.MODES}
    assert sum(p is not None for p in modes.values()) >= 10
    good = (folder / "a_good.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    jpeg = (folder / "zz_good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is not a video\n" * 20)
    (folder / "empty.mp4").write_bytes(b"")
    writer = cv2.VideoWriter(str(folder / "zero_frames.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    writer.release()
    os.symlink("..", folder / "deeper" / "loop")                       # a folder loop
    os.symlink("self.png", folder / "self.png")                        # a file link loop
    os.symlink("missing.png", folder / "dangling.png")

    inputs = collect([str(folder)])
    assert len([p for p in inputs.images if p.name == "a_good.png"]) == 1   # the loop is walked once

    out = tmp_path / "faces.csv"
    code = cli(["analyze", str(folder), "--csv", str(out), "--model", "fast", "--quiet"])
    assert code == 1
    rows = list(csv.DictReader(open(out)))
    sources = {os.path.basename(r["source"]) for r in rows}
    assert {"a_good.png", "zz_good.jpg"} <= sources
    for mode, path in modes.items():   # every mode a file can store: the face found
        assert path is None or os.path.basename(path) in sources, mode
    log = caplog.text
    for name in ("truncated.png", "truncated.jpg", "empty.png", "notes.mp4", "empty.mp4", "zero_frames.avi"):
        assert name in log.split("could not be read")[1], name
    faceless = log.split("no face found in")[1].split("\n")[0]
    for h, w in SIZES:
        assert f"size_{h}x{w}.png" in faceless
    assert "huge.jpg" in faceless
    assert "self.png" in log and "dangling.png" in log   # passed over, named
    assert not (tmp_path / "faces.parts").exists() or list((tmp_path / "faces.parts").glob("*.tmp")) == []


def test_the_app_says_no_face_found_for_tiny_uploads(rec, tmp_path):
    pytest.importorskip("gradio", reason="the app needs gradio (the app extra)")
    from kefer.app import App, Session
    from kefer.app.handlers import Handlers

    app = App(rec)
    paths = []
    for side in (1, 5, 12):
        Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(tmp_path / f"tiny{side}.png")
        paths.append(str(tmp_path / f"tiny{side}.png"))
    message = Handlers(app).analyse_photos(paths, Session(app))[0]
    assert "went wrong" not in message and "No face found in tiny1.png, tiny5.png, tiny12.png" in message
