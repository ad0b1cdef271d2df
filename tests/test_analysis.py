"""The analysis pipeline and ``kefer analyze`` on real CK+ faces: photos, folders, videos, bad input."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image

import kefer
from kefer.analysis import ImageAnalyzer, VideoError, VideoReader, analyze_video
from kefer.cli import main as cli


def ck_face(ckplus_root, cls: str, index: int = 0, side: int = 200) -> np.ndarray:
    """A real CK+ crop of ``cls``, upscaled to [side, side, 3] RGB."""
    path = sorted((ckplus_root / cls).glob("*.png"))[index]
    return cv2.resize(np.array(Image.open(path).convert("RGB")), (side, side), interpolation=cv2.INTER_CUBIC)


def composite(faces: list[np.ndarray], height: int = 480, gap: int = 40) -> np.ndarray:
    """Faces side by side on a grey canvas [height, W, 3]."""
    width = sum(f.shape[1] for f in faces) + gap * (len(faces) + 1)
    canvas = np.full((height, width, 3), 118, np.uint8)
    x = gap
    for f in faces:
        y = (height - f.shape[0]) // 2
        canvas[y:y + f.shape[0], x:x + f.shape[1]] = f
        x += f.shape[1] + gap
    return canvas


def write_video(path, frames: list[np.ndarray], fps: float = 15.0, codec: str = "MJPG") -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def face_clip(ckplus_root, cls: str, n: int = 24, moving: bool = True) -> list[np.ndarray]:
    """n 640x480 frames with one real ``cls`` face drifting slowly to the right."""
    face = ck_face(ckplus_root, cls, side=220)
    frames = []
    for i in range(n):
        frame = np.full((480, 640, 3), 110, np.uint8)
        x = 150 + (3 * i if moving else 0)
        frame[130:350, x:x + 220] = face
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def rec():
    return kefer.load("accurate")


def test_analyze_finds_every_face_of_a_composite_photo(rec, ckplus_root):
    classes = ["happiness", "surprise", "neutral", "sadness"]
    photo = composite([ck_face(ckplus_root, c, side=180) for c in classes])
    faces = sorted(rec.analyze(photo), key=lambda f: f.box[0])
    assert len(faces) == len(classes)
    for i, face in enumerate(faces):  # each box holds its own pasted face
        x_centre = (face.box[0] + face.box[2]) / 2
        assert 40 + i * 220 < x_centre < 40 + i * 220 + 180
        assert face.crop.shape == (rec.input_size, rec.input_size, 3)
        assert np.isclose(np.linalg.norm(face.embedding), 1, atol=1e-4)
        assert np.isclose(face.probabilities.sum(), 1, atol=1e-4) and face.label in rec.classes
    assert faces[0].label == "happiness" and faces[1].label == "surprise"


def test_boxes_of_a_huge_photo_are_in_its_own_pixels_and_clipped(rec, ckplus_root, tmp_path):
    small = composite([ck_face(ckplus_root, "happiness", side=180)], height=300)
    big = cv2.resize(small, None, fx=10, fy=10, interpolation=cv2.INTER_LINEAR)   # 3000 px tall, over MAX_SIDE
    path = tmp_path / "huge.png"
    Image.fromarray(big).save(path)
    (face,) = rec.analyze(path)   # decoded at most 1920 px per side, detected at 1280
    centre = (face.box[:2] + face.box[2:]) / 2
    np.testing.assert_allclose(centre, [1300, 1500], atol=150)   # the pasted face, in the original's pixels
    assert 1200 < face.box[2] - face.box[0] < 2200
    assert face.box.min() >= 0 and face.box[2] <= big.shape[1] - 1 and face.box[3] <= big.shape[0] - 1


def test_a_photo_without_a_face_gives_nothing_or_the_whole_image(rec):
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    analyzer = ImageAnalyzer(rec)
    assert analyzer.analyze(noise) == []
    (whole,) = analyzer.analyze(noise, whole_if_none=True)
    assert whole.whole_image and whole.box.tolist() == [0, 0, 319, 239]


def test_prompts_passed_per_call_leave_the_recogniser_alone(rec, ckplus_root):
    photo = composite([ck_face(ckplus_root, "happiness")])
    mine = rec.encode_prompts(classes=["neutral", "happiness", "confusion"])
    (face,) = rec.analyze(photo, prompts=mine)
    assert face.classes == ("neutral", "happiness", "confusion") and face.probabilities.shape == (3,)
    assert rec.classes == list(rec.trained_prompts.classes) and len(rec.classes) == 8


def test_video_tracks_keep_their_ids_and_label_a_happy_face(rec, ckplus_root, tmp_path):
    path = tmp_path / "happy.avi"
    write_video(path, face_clip(ckplus_root, "happiness"))
    frames = list(analyze_video(rec, path, every=3))
    assert len(frames) == 24 and [f.index for f in frames] == list(range(24))
    assert all(len(f.faces) == 1 for f in frames)
    assert len({f.faces[0].track_id for f in frames}) == 1
    labels = [f.faces[0].label for f in frames]
    assert labels.count("happiness") >= 20


def test_frames_embedded_in_batches_score_as_frame_by_frame(rec, ckplus_root, tmp_path):
    """Two faces a frame, 22 frames in batches of 5 (the last one short): 12 frames of neutral faces,
    then each frame's two people another expression's, each track scored against its own neutral
    face once estimated: the same tracks, references and probabilities as one frame at a time."""
    path = tmp_path / "two.avi"
    classes = ["happiness", "surprise", "anger", "sadness", "fear"]
    left = [("neutral", i % 3) for i in range(12)] + [(classes[i % 5], 0) for i in range(10)]
    right = [("neutral", 3 + i % 3) for i in range(12)] + [(classes[(i + 2) % 5], 0) for i in range(10)]
    write_video(path, [composite([ck_face(ckplus_root, c, k, side=180) for c, k in pair]) for pair in zip(left, right)])
    one = list(analyze_video(rec, path, every=3, estimate=True))
    many = list(analyze_video(rec, path, every=3, estimate=True, batch=5))
    assert [f.index for f in many] == list(range(22)) and all(len(f.faces) == 2 for f in many)
    assert {x.reference for f in one[-5:] for x in f.faces} == {"estimated"}
    for a, b in zip(one, many):
        assert [x.track_id for x in a.faces] == [x.track_id for x in b.faces]
        assert np.allclose([x.probabilities for x in a.faces], [x.probabilities for x in b.faces], atol=1e-4)
        assert [x.reference for x in a.faces] == [x.reference for x in b.faces]


def test_cli_writes_rows_annotated_video_and_timeline(ckplus_root, tmp_path):
    video = tmp_path / "surprise.avi"
    write_video(video, face_clip(ckplus_root, "surprise", n=18))
    out = tmp_path / "out"
    out.mkdir()
    code = cli(["analyze", str(video), "--csv", str(out / "faces.csv"), "--json", str(out / "faces.jsonl"),
                "--video", str(out / "annotated.mp4"), "--plot", str(out / "timeline.png"), "--quiet"])
    assert code == 0
    rows = list(csv.DictReader(open(out / "faces.csv")))
    assert [int(r["frame"]) for r in rows] == list(range(18))
    assert {"source", "frame", "time", "track", "x0", "y0", "x1", "y1", "p_surprise", "label"} <= set(rows[0])
    assert float(rows[3]["time"]) == pytest.approx(3 / 15, abs=1e-3)
    assert sum(r["label"] == "surprise" for r in rows) >= 15
    probs = [sum(float(v) for k, v in r.items() if k.startswith("p_")) for r in rows]
    assert np.allclose(probs, 1, atol=1e-3)
    assert len(open(out / "faces.jsonl").read().splitlines()) == 18
    played = cv2.VideoCapture(str(out / "annotated.mp4"))   # a playable video with every frame
    count = 0
    while played.read()[0]:
        count += 1
    assert count == 18
    assert Image.open(out / "timeline.png").size[0] > 500


def test_cli_on_a_folder_lists_unsupported_and_unreadable_files(ckplus_root, tmp_path, caplog):
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    Image.fromarray(composite([ck_face(ckplus_root, "happiness")])).save(folder / "one.png")
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(tmp_path / "photos" / "blank.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "faces.csv"
    code = cli(["analyze", str(tmp_path / "photos"), "--csv", str(out), "--quiet"])
    assert code == 1   # an unreadable file: reported, the rest analysed
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 1 and rows[0]["source"].endswith("one.png") and rows[0]["label"] == "happiness"
    log = caplog.text
    assert "notes.txt" in log and "skipped" in log
    assert "broken.jpg" in log and "could not be read" in log
    assert "blank.jpg" in log and "no face" in log
    assert str(tmp_path) not in log.split("broken.jpg")[1].split("\n")[0]   # names the file, not a server path


def test_bad_videos_get_clear_errors(rec, tmp_path):
    with pytest.raises(VideoError, match="no such video"):
        VideoReader(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(VideoError, match="junk.mp4"):
        list(VideoReader(junk))
    assert cli(["analyze", str(junk), "--quiet"]) == 1


def test_corrupt_frames_mid_video_are_skipped_and_counted(rec, ckplus_root, tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path, face_clip(ckplus_root, "happiness", n=12, moving=False))
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    assert len(starts) == 12
    for k in (5, 6):   # wipe two frames' JPEG data
        data[starts[k]:starts[k + 1] - 16] = bytes(starts[k + 1] - 16 - starts[k])
    path.write_bytes(bytes(data))
    reader = VideoReader(path)
    frames = list(analyze_video(rec, path, reader=reader))
    assert reader.skipped == 2 and len(frames) == 10
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    assert all(len(f.faces) == 1 for f in frames)


def test_cli_refuses_bad_arguments_before_writing(tmp_path, ckplus_root):
    assert cli(["analyze", str(tmp_path / "nothing-here"), "--quiet"]) == 2
    image = tmp_path / "a.png"
    Image.fromarray(composite([ck_face(ckplus_root, "happiness")])).save(image)
    assert cli(["analyze", str(image), "--video", str(tmp_path / "v.mp4"), "--quiet"]) == 2   # no video input
    assert cli(["analyze", str(image), "--csv", str(tmp_path / "no" / "dir.csv"), "--quiet"]) == 2
    assert cli(["analyze", str(image), "--every", "0", "--quiet"]) == 2
    assert not (tmp_path / "v.mp4").exists()


def test_jsonl_rows_match_csv_rows(ckplus_root, tmp_path):
    image = tmp_path / "b.png"
    Image.fromarray(composite([ck_face(ckplus_root, c) for c in ("happiness", "surprise")])).save(image)
    assert cli(["analyze", str(image), "--csv", str(tmp_path / "f.csv"), "--json", str(tmp_path / "f.jsonl"),
                "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "f.csv")))
    objs = [json.loads(line) for line in open(tmp_path / "f.jsonl")]
    assert len(rows) == len(objs) == 2
    assert [r["label"] for r in rows] == [o["label"] for o in objs]


def test_the_kefer_console_script_runs(ckplus_root, tmp_path):
    """The ``kefer`` command that ``pip install -e .`` (the README's test command) puts on the PATH."""
    import shutil
    import subprocess

    exe = shutil.which("kefer")
    assert exe, "no `kefer` command on the PATH: install the package (pip install -e .)"
    image = tmp_path / "c.png"
    Image.fromarray(composite([ck_face(ckplus_root, "happiness")])).save(image)
    r = subprocess.run([exe, "analyze", str(image), "--csv", str(tmp_path / "c.csv"), "--model", "accurate-int8",
                        "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert len(rows) == 1 and rows[0]["label"] == "happiness" and rows[0]["whole_image"] == "False"
