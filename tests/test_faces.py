"""The frame pipeline (kefer/faces.py) on real FER+/CK+ faces pasted into larger frames."""
import csv

import cv2
import numpy as np
import pytest
from facenet_pytorch import MTCNN
from PIL import Image

from kefer.analysis import EmbeddingSmoother
from kefer.faces import (FaceDetector, FaceTracker, ImageError, class_colour, draw, load_image,
                         to_rgb, whole_image_face)

GREY = 110


def real_faces(ckplus_root, n: int, expression: str = "happiness") -> list[np.ndarray]:
    """The first n CK+ faces of one expression, [48, 48, 3] uint8 RGB each."""
    paths = sorted((ckplus_root / expression).glob("*.png"))[:n]
    return [np.array(Image.open(p).convert("RGB")) for p in paths]


def ferplus_faces(ferplus_root, n: int) -> list[np.ndarray]:
    """The first n FER+ test faces, [48, 48, 3] uint8 RGB each."""
    split = ferplus_root / "FER2013Test"
    with open(split / "label.csv") as f:
        names = [row[0] for _, row in zip(range(n), csv.reader(f))]
    return [np.array(Image.open(split / name).convert("RGB")) for name in names]


def paste(faces: list[np.ndarray], places: list[tuple[int, int, int]], size=(640, 480)) -> np.ndarray:
    """A grey [H, W, 3] frame with each face upscaled to side s and pasted at (x, y, s)."""
    frame = np.full((size[1], size[0], 3), GREY, np.uint8)
    for face, (x, y, s) in zip(faces, places):
        frame[y : y + s, x : x + s] = cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC)
    return frame


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(crop_size=112)


@pytest.fixture(scope="module")
def ferplus_faces_few(ferplus_root):
    return ferplus_faces(ferplus_root, 8)


def test_one_real_face_found_where_it_was_pasted(detector, ckplus_root):
    frame = paste(real_faces(ckplus_root, 1), [(300, 150, 220)])
    faces = detector.faces(frame)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    assert 300 <= (x0 + x1) / 2 <= 520 and 150 <= (y0 + y1) / 2 <= 370
    assert 0.5 * 220 < x1 - x0 < 1.2 * 220
    assert faces[0].crop.shape == (112, 112, 3) and faces[0].crop.dtype == np.uint8
    assert faces[0].landmarks.shape == (5, 2)


def test_two_faces_largest_first_and_empty_frame_has_none(detector, ckplus_root, ferplus_faces_few):
    frame = paste(real_faces(ckplus_root, 1) + ferplus_faces_few[:1], [(20, 100, 160), (330, 60, 260)])
    faces = detector.faces(frame)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area and faces[0].box[0] > 300
    assert detector.faces(np.full((480, 640, 3), GREY, np.uint8)) == []


def test_most_ferplus_faces_are_found(detector, ferplus_faces_few):
    found = sum(len(detector.faces(paste([f], [(200, 120, 240)]))) == 1 for f in ferplus_faces_few)
    assert found >= 6


def test_alignment_levels_the_eyes(ckplus_root):
    face = real_faces(ckplus_root, 1, "surprise")[0]
    frame = paste([face], [(200, 120, 240)])
    rotated = cv2.warpAffine(frame, cv2.getRotationMatrix2D((320, 240), 20, 1.0), (640, 480),
                             borderValue=(GREY, GREY, GREY))
    detector = FaceDetector(crop_size=160)
    [found] = detector.faces(rotated)
    (lx, ly), (rx, ry) = found.landmarks[:2]
    assert abs(np.degrees(np.arctan2(ry - ly, rx - lx))) > 12  # the frame's face is tilted...
    _, _, points = MTCNN(keep_all=True).detect(found.crop, landmarks=True)
    (lx, ly), (rx, ry) = points[0][:2]
    assert abs(np.degrees(np.arctan2(ry - ly, rx - lx))) < 5  # ...its crop is level


def test_tracker_detects_every_n_frames_and_keeps_track_ids(detector, ckplus_root, monkeypatch):
    face = real_faces(ckplus_root, 1)[0]
    calls = []
    detect = detector.detect
    monkeypatch.setattr(detector, "detect", lambda rgb: calls.append(1) or detect(rgb))
    tracker = FaceTracker(detector, every=3)
    ids = []
    for i in range(7):
        faces = tracker.update(paste([face], [(200 + 4 * i, 120, 220)]))  # the face drifts right
        assert len(faces) == 1 and faces[0].crop.shape == (112, 112, 3)
        ids.append(faces[0].track_id)
    assert len(calls) == 3  # frames 0, 3 and 6
    assert len(set(ids)) == 1
    empty = np.full((480, 640, 3), GREY, np.uint8)
    assert [len(tracker.update(empty)) for _ in range(3)] == [1, 1, 0]  # boxes kept until frame 9 re-detects
    calls.clear()
    tracker.update(empty)
    assert len(tracker.update(paste([face], [(200, 120, 220)]))) == 1  # with no track: detection every frame
    assert len(calls) == 2


def test_smoother_averages_each_track_and_forgets_lost_ones():
    smooth = EmbeddingSmoother(window=2)
    a, b, c = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(smooth([7], a[None]), [a])
    np.testing.assert_allclose(smooth([7, 8], np.stack([b, c])), [(a + b) / 2, c])
    np.testing.assert_allclose(smooth([7], c[None]), [(b + c) / 2])  # window 2: a is gone
    assert set(smooth.history) == {7}


def test_draw_boxes_and_labels_on_a_copy(detector, ckplus_root):
    frame = paste(real_faces(ckplus_root, 1), [(200, 0, 220)])  # face at the top edge: label goes inside
    faces = detector.faces(frame)
    before = frame.copy()
    out = draw(frame, faces, ["happiness 0.93"], [class_colour(1)], selected=0)
    np.testing.assert_array_equal(frame, before)
    x0, y0, x1, y1 = (int(v) for v in faces[0].box)
    assert (out[(y0 + y1) // 2, x0] == class_colour(1)).all()
    assert (out != frame).any(axis=2).sum() > 1000


def test_whole_image_face_is_a_centre_square():
    rgb = np.zeros((300, 500, 3), np.uint8)
    rgb[:, 100:400] = 255
    face = whole_image_face(rgb, 64)
    assert face.crop.shape == (64, 64, 3) and (face.crop == 255).all()
    np.testing.assert_array_equal(face.box, [0, 0, 499, 299])


@pytest.mark.parametrize("make", [
    lambda g: g[:, :, 0],                                               # greyscale [H, W]
    lambda g: g[:, :, :1],                                              # [H, W, 1]
    lambda g: np.dstack([g, np.full(g.shape[:2], 255, np.uint8)]),      # opaque RGBA
    lambda g: g.astype(np.uint16) * 257,                                # 16-bit
    lambda g: g.astype(np.float32) / 255,                               # float 0..1
    lambda g: Image.fromarray(g).convert("CMYK"),                       # other PIL modes
    lambda g: Image.fromarray(g[:, :, 0].astype(np.uint16) * 257),      # PIL I;16
])
def test_to_rgb_keeps_the_face_in_any_format(make, ckplus_root):
    grey = real_faces(ckplus_root, 1)[0]
    rgb = to_rgb(make(grey))
    assert rgb.shape == grey.shape and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - grey).max() <= 2


def test_to_rgb_composites_transparency_over_white_and_rejects_non_images():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2, :, 3] = 255
    rgb = to_rgb(rgba)
    assert (rgb[:2] == 0).all() and (rgb[2:] == 255).all()
    with pytest.raises(ImageError):
        to_rgb(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageError):
        to_rgb(np.zeros((0, 4, 3), np.uint8))


def test_load_image_formats_and_failures(tmp_path, detector, ckplus_root):
    frame = paste(real_faces(ckplus_root, 1), [(200, 120, 220)])
    grey16 = frame[:, :, 0].astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    Image.fromarray(np.dstack([frame, np.full((480, 640), 255, np.uint8)])).save(tmp_path / "rgba.png")
    for name in ("grey16.png", "rgba.png"):
        rgb = load_image(tmp_path / name)
        assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
        assert len(detector.faces(rgb)) == 1

    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "cut.png").write_bytes((tmp_path / "rgba.png").read_bytes()[:2000])
    for name in ("corrupt.jpg", "cut.png"):
        with pytest.raises(ImageError, match=name):
            load_image(tmp_path / name)


def test_huge_photo_is_downscaled_while_decoding(tmp_path):
    Image.new("RGB", (6000, 4000), (90, 120, 150)).save(tmp_path / "huge.jpg", quality=90)
    rgb = load_image(tmp_path / "huge.jpg")
    assert rgb.shape == (1280, 1920, 3)
    assert np.abs(rgb[640, 960].astype(int) - (90, 120, 150)).max() <= 3
