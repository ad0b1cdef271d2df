"""Faces in frames: image sanitising, MTCNN detection, alignment, tracking and drawing.

The per-frame path of the app is

    frame [H, W, 3] uint8 RGB
      -> FaceTracker.update   (MTCNN on a downscaled copy every few frames, boxes reused in between)
      -> Face.crop            (eye-levelled square crop, [S, S, 3] uint8, S = model input size)
      -> encoder + scoring    (kefer.analysis, with the recogniser)
      -> draw                 (boxes and labels on a copy of the frame)

Nothing here knows about the model; everything works on plain numpy RGB arrays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN
from PIL import Image, ImageOps

MAX_SIDE = 1920  # uploads are downscaled to at most this many pixels per side before anything else


class ImageError(ValueError):
    """An upload that is not a usable image; the message is meant for the user."""


def to_rgb(image, max_side: int | None = None) -> np.ndarray:
    """Any PIL image or array -> [H, W, 3] uint8 RGB, downscaled to at most max_side per side.

    Accepts grey [H, W] / [H, W, 1], grey+alpha [H, W, 2], RGB, RGBA (composited over white),
    and uint8, 16-bit, int32, float (0..1 or 0..255) and bool pixels. Downscaling happens
    right after the conversion to uint8, before alpha compositing and channel expansion.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("P", "PA", "RGBa", "La"):   # palettes; alpha premultiplied -> straight alpha
            image = image.convert("LA" if image.mode == "La" else "RGBA")
        elif image.mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "F") and not image.mode.startswith("I;16"):
            image = image.convert("RGB")  # CMYK, YCbCr, LAB, ...
    a = np.asarray(image)
    if a.size == 0 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)):
        raise ImageError(f"not an image: array of shape {a.shape}")
    a = _to_uint8(a)
    if max_side is not None:
        a = limit_size(a, max_side)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] in (2, 4):
        colour, alpha = a[:, :, :-1].astype(np.uint16), a[:, :, -1:].astype(np.uint16)
        a = ((colour * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Pixels of any numeric dtype -> uint8; 16-bit ranges are scaled down, not clipped."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float32))
        if a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        return np.clip(a, 0, 255).round().astype(np.uint8)
    if a.max() > 255:
        a = a // 257  # 16-bit range 0..65535 -> 0..255
    return np.clip(a, 0, 255).astype(np.uint8)


def limit_size(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Downscale [H, W] or [H, W, C] so that max(H, W) <= max_side (area interpolation)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return small.reshape(small.shape[:2] + image.shape[2:])


def read_image(path, max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """Read an image file -> ([H, W, 3] uint8 RGB, scale): EXIF-rotated, at most max_side per side;
    ``scale`` = original pixels per returned pixel (1.0 unless it was downscaled).

    Large JPEGs are decoded at reduced scale (PIL's draft mode), other formats are downscaled right
    after decoding. Raises ImageError naming the file (never its folder) for anything unreadable.
    """
    name = os.path.basename(str(path))
    try:
        with Image.open(path) as img:
            original = max(img.size)
            img.draft(None, (max_side, max_side))
            img = ImageOps.exif_transpose(img)
            img.load()
            rgb = to_rgb(img, max_side)
    except ImageError as err:
        raise ImageError(f"{name}: {err}") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        reason = str(err).replace(str(path), name).replace(os.path.dirname(str(path)) + os.sep, "")
        raise ImageError(f"{name}: not a readable image ({type(err).__name__}: {reason})") from err
    return rgb, original / max(rgb.shape[:2])


def load_image(path, max_side: int = MAX_SIDE) -> np.ndarray:
    """``read_image`` without the scale: [H, W, 3] uint8 RGB."""
    return read_image(path, max_side)[0]


@dataclass
class Face:
    """One detected face. box: [4] x0, y0, x1, y1 and landmarks: [5, 2] (eyes, nose, mouth corners),
    both in frame pixels; crop: [S, S, 3] uint8 aligned face; track_id: stable across frames."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    crop: np.ndarray | None = None
    track_id: int = -1
    whole: bool = False   # the whole image stands in for a face (none was found)

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


def whole_image_face(rgb: np.ndarray, crop_size: int) -> Face:
    """The whole image as one face (for photos where MTCNN finds none): centre square crop."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = cv2.resize(rgb[y0 : y0 + side, x0 : x0 + side], (crop_size, crop_size), interpolation=cv2.INTER_AREA)
    box = np.array([0, 0, w - 1, h - 1], dtype=np.float32)
    return Face(box=box, landmarks=np.zeros((5, 2), np.float32), score=0.0, crop=crop, whole=True)


class FaceDetector:
    """MTCNN (facenet-pytorch, weights from its wheel) plus eye-levelled square crops.

    detect_side: frames are downscaled so their longer side is at most this before MTCNN runs
    (MTCNN costs ~52 ms at 640x480 and ~11 ms at 320x240 on 2 CPU cores); boxes are mapped back.
    min_face_size: smallest face MTCNN looks for, in pixels of the downscaled image.
    crop_scale: side of the crop relative to the mean of the box's width and height; 1.0 frames
    the face like the FER+ crops (MTCNN's box is ~0.85 x 1.12 of a FER+ crop).
    """

    def __init__(self, device: str = "cpu", crop_size: int = 112, detect_side: int = 320,
                 min_face_size: int = 40, crop_scale: float = 1.0, min_score: float = 0.9):
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=torch.device(device))
        self.crop_size = crop_size
        self.detect_side = detect_side
        self.crop_scale = crop_scale
        self.min_score = min_score

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """[H, W, 3] uint8 RGB -> faces (without crops), largest first; none in an image (after the
        downscaling) smaller than ``min_face_size`` on its shorter side."""
        scale = min(1.0, self.detect_side / max(rgb.shape[:2]))
        small = limit_size(rgb, self.detect_side) if scale < 1.0 else rgb
        if min(small.shape[:2]) * (12.0 / self.mtcnn.min_face_size) < 12:
            return []   # smaller than the smallest face sought: MTCNN's pyramid would have no level
        with torch.inference_mode():
            boxes, scores, points = self.mtcnn.detect(small, landmarks=True)
        if boxes is None:
            return []
        faces = [
            Face(box=(b / scale).astype(np.float32), landmarks=(p / scale).astype(np.float32), score=float(s))
            for b, s, p in zip(boxes, scores, points)
            if s >= self.min_score
        ]
        return sorted(faces, key=lambda f: f.area, reverse=True)

    def align(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """Crop one face: rotate about the box centre so the eyes are level, square of side
        crop_scale * (w + h) / 2, resized to [crop_size, crop_size, 3] uint8 (edges replicated)."""
        x0, y0, x1, y1 = face.box
        centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
        side = max(1.0, self.crop_scale * ((x1 - x0) + (y1 - y0)) / 2.0)
        (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
        angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
        m = cv2.getRotationMatrix2D(centre, angle, self.crop_size / side)
        m[:, 2] += self.crop_size / 2.0 - np.array(centre)
        return cv2.warpAffine(rgb, m, (self.crop_size, self.crop_size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)

    def faces(self, rgb: np.ndarray) -> list[Face]:
        """Detect and crop every face in one image (uploads)."""
        faces = self.detect(rgb)
        for face in faces:
            face.crop = self.align(rgb, face)
        return faces


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [4] boxes x0, y0, x1, y1."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class FaceTracker:
    """Per-stream face tracking: MTCNN every `every` frames, the last boxes reused in between.

    While no face is tracked, MTCNN runs on every frame, so a face that appears is found at once.
    Track ids are carried over from the previous detection when boxes overlap (IoU >= 0.3),
    so per-face smoothing and the user's face selection survive re-detection.
    """

    def __init__(self, detector: FaceDetector, every: int = 3):
        self.detector = detector
        self.every = every
        self.since_detection = 0
        self.tracks: list[Face] = []
        self.next_id = 0

    def update(self, rgb: np.ndarray) -> list[Face]:
        """One frame [H, W, 3] uint8 -> its faces, each with a crop and a track id."""
        if not self.tracks or self.since_detection >= self.every:
            self.tracks = self._match(self.detector.detect(rgb))
            self.since_detection = 0
        self.since_detection += 1
        return [Face(f.box, f.landmarks, f.score, self.detector.align(rgb, f), f.track_id) for f in self.tracks]

    def _match(self, faces: list[Face]) -> list[Face]:
        previous = list(self.tracks)
        for face in faces:
            overlaps = [iou(face.box, p.box) for p in previous]
            if overlaps and max(overlaps) >= 0.3:
                face.track_id = previous.pop(int(np.argmax(overlaps))).track_id
            else:
                face.track_id, self.next_id = self.next_id, self.next_id + 1
        return faces


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct RGB colour per class index (matplotlib's tab10), shared by boxes, bars and plots."""
    hex_colour = TAB10[index % len(TAB10)]
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def draw(rgb: np.ndarray, faces: list[Face], labels: list[str], colours: list[tuple[int, int, int]],
         selected: int | None = None) -> np.ndarray:
    """A copy of the frame with a box and a label per face; the selected face (index) drawn thicker."""
    out = rgb.copy()
    scale = max(0.4, max(rgb.shape[:2]) / 1000.0)
    for i, (face, label, colour) in enumerate(zip(faces, labels, colours)):
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        thickness = max(1, round(scale * (4 if i == selected else 2)))
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(scale * 1.5)))
        ty = y0 - th - base - 2 if y0 - th - base - 2 >= 0 else y1
        cv2.rectangle(out, (x0, ty), (x0 + tw + 4, ty + th + base + 2), colour, -1)
        cv2.putText(out, label, (x0 + 2, ty + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, round(scale * 1.5)), cv2.LINE_AA)
    return out
