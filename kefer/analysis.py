"""The analysis pipeline: images, streams and video files -> every face, scored.

    ImageAnalyzer(rec).analyze("group.jpg")         # a still image: thorough detection
    stream = StreamAnalyzer(rec, every=3)            # a webcam or video: tracked faces
    faces = stream.update(frame)                     # per frame [H, W, 3] uint8 RGB
    for frame in analyze_video(rec, "clip.mp4"):     # a video file, frame by frame
        frame.index, frame.time, frame.faces

Each face comes back as a ``FaceResult``: box and landmarks in the image's own pixels, the aligned
crop, its embedding, cosine and probability per class, its top class and its label ("uncertain"
where the prompts' operating point abstains on it), all scored by ``Recognizer.score`` against the
caller's prompts (default: the recogniser's). The Gradio app,
the ``kefer analyze`` command line and ``Recognizer.analyze`` are views on this module.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from .faces import (MAX_SIDE, Face, FaceDetector, FaceTracker, ImageError, limit_size, read_image, to_rgb,
                    whole_image_face)
from .operating import UNCERTAIN, margins
from .reference import Reference
from .scoring import Prompts, l2_normalise

PHOTO_SIDE = 1280      # still images are searched at up to this many pixels per side ...
PHOTO_MIN_FACE = 20    # ... for faces of at least this many pixels there (small faces in group photos)
STREAM_SIDE = 320      # stream frames at 320 px for faces of 40+ px: fast enough for every 3rd frame
STREAM_MIN_FACE = 40


@dataclass
class FaceResult:
    """One scored face. box [4] x0, y0, x1, y1 and landmarks [5, 2] in the image's own pixels (box
    clipped to the image); crop [S, S, 3] uint8; embedding [d] L2-normalised; cosines and
    probabilities [K], one per class of ``classes``; track_id stable across a stream's frames;
    ``abstain_margin``: the operating point's threshold (None: always answer), below which the
    face's ``label`` is "uncertain" (its ``top_class`` stays available); ``reference``: which of the
    person's references it was scored against ("none", "recorded" or "estimated")."""

    box: np.ndarray
    landmarks: np.ndarray
    detection_score: float
    crop: np.ndarray
    embedding: np.ndarray
    cosines: np.ndarray
    probabilities: np.ndarray
    classes: tuple
    track_id: int = -1
    whole_image: bool = False
    abstain_margin: float | None = None
    reference: str = "none"

    @property
    def index(self) -> int:
        """Index of the most probable class."""
        return int(np.argmax(self.probabilities))

    @property
    def top_class(self) -> str:
        """The most probable class, whether or not the face is answered."""
        return self.classes[self.index]

    @property
    def margin(self) -> float:
        """Top-1 minus top-2 probability."""
        return float(margins(self.probabilities))

    @property
    def uncertain(self) -> bool:
        """Below the abstain margin: the model does not answer."""
        return self.abstain_margin is not None and self.margin < self.abstain_margin

    @property
    def label(self) -> str:
        """The answer: ``top_class``, or "uncertain" below the abstain margin."""
        return UNCERTAIN if self.uncertain else self.top_class

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.index])

    @property
    def label_text(self) -> str:
        """The label shown on its box: 'happiness 0.93', or 'uncertain (happiness 0.41)'."""
        text = f"{self.top_class} {self.confidence:.2f}"
        return f"{UNCERTAIN} ({text})" if self.uncertain else text

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def as_dict(self) -> dict:
        """Plain values for CSV/JSON: track, box, one probability per class, label, top class, whether
        the whole image stood in for a face."""
        row = {"track": self.track_id, **{k: round(float(v), 1) for k, v in zip(("x0", "y0", "x1", "y1"), self.box)}}
        row.update({f"p_{c}": round(float(p), 5) for c, p in zip(self.classes, self.probabilities)})
        row["label"] = self.label
        row["top_class"] = self.top_class
        row["whole_image"] = self.whole_image
        row["reference"] = self.reference
        return row


def score_faces(recognizer, faces: list[Face], features: np.ndarray, prompts: Prompts | None,
                scale: float = 1.0, size: tuple | None = None, reference=None) -> list[FaceResult]:
    """Faces with crops and their representations [N, d] -> FaceResults. ``scale`` maps the
    detection image's pixels to the original's ([H, W] ``size``, where boxes are clipped);
    ``reference``: the person's neutral face (``reference.Reference``), for every face."""
    if not faces:
        return []
    prompts = prompts or recognizer.prompts
    cos, probs = recognizer.score(features, prompts, reference)
    embeddings = l2_normalise(features)
    results = []
    for i, face in enumerate(faces):
        box = face.box * scale
        if size is not None:
            box = np.clip(box, 0, [size[1] - 1, size[0] - 1, size[1] - 1, size[0] - 1])
        results.append(FaceResult(box.astype(np.float32), (face.landmarks * scale).astype(np.float32), face.score,
                                  face.crop, embeddings[i], cos[i], probs[i], prompts.classes, face.track_id,
                                  whole_image=face.whole, abstain_margin=prompts.abstain_margin,
                                  reference=reference.source if reference is not None else "none"))
    return results


def as_image(image) -> tuple[np.ndarray, float, tuple]:
    """A path, PIL image or array -> ([h, w, 3] uint8 RGB, at most MAX_SIDE per side, original pixels
    per pixel, original [H, W])."""
    if isinstance(image, (str, os.PathLike)):
        rgb, scale = read_image(image)
    else:
        full = to_rgb(image)
        rgb = limit_size(full, MAX_SIDE)
        scale = max(full.shape[:2]) / max(rgb.shape[:2])
    size = (round(rgb.shape[0] * scale), round(rgb.shape[1] * scale))
    return rgb, scale, size


class ImageAnalyzer:
    """Still images: MTCNN at up to 1280 px for faces of 20+ px there, every face scored."""

    def __init__(self, recognizer, detector: FaceDetector | None = None):
        self.rec = recognizer
        self.detector = detector or FaceDetector(crop_size=recognizer.input_size, detect_side=PHOTO_SIDE,
                                                 min_face_size=PHOTO_MIN_FACE)

    def analyze(self, image, prompts: Prompts | None = None, whole_if_none: bool = False,
                reference=None) -> list[FaceResult]:
        """Every face in one image, largest first; ``whole_if_none``: with no face found, score the
        whole image (centre square) as one face (``FaceResult.whole_image``); ``reference``: the
        person's neutral face, for every face found."""
        return self.analyze_many([image], prompts, whole_if_none, reference)[0]

    def analyze_many(self, images: list, prompts: Prompts | None = None,
                     whole_if_none: bool = False, reference=None) -> list[list[FaceResult]]:
        """Several images, their faces embedded in one batch -> one list of FaceResults per image."""
        found = []
        for image in images:
            rgb, scale, size = as_image(image)
            faces = self.detector.faces(rgb)
            if not faces and whole_if_none:
                faces = [whole_image_face(rgb, self.detector.crop_size)]
            found.append((faces, scale, size))
        crops = [f.crop for faces, _, _ in found for f in faces]
        features = self.rec.embed(crops, normalise=False)
        out, start = [], 0
        for faces, scale, size in found:
            out.append(score_faces(self.rec, faces, features[:len(faces)], prompts, scale, size,
                                   reference))
            start += len(faces)
        return out


class NeutralEstimates:
    """Each track's neutral face estimated from its own frames as it plays: the renormalised mean
    of its last ``keep`` embeddings that plain scoring calls neutral. A track has an estimate once
    ``warmup`` such frames were seen (``reference.Reference`` with source "estimated"); absent
    tracks are forgotten. Each track keeps a running sum, so a frame costs O(d), not O(keep * d)."""

    def __init__(self, warmup: int = 10, keep: int = 150):
        self.warmup, self.keep = warmup, keep
        self.frames: dict[int, deque] = {}
        self.sums: dict[int, np.ndarray] = {}

    def update(self, track_ids: list[int], embeddings: np.ndarray, neutral: np.ndarray) -> list:
        """This frame's faces (track ids, embeddings [N, d], whether plain scoring calls each neutral
        [N]) -> each face's estimate (a Reference, or None during the warm-up)."""
        self.frames = {t: self.frames.get(t, deque(maxlen=self.keep)) for t in track_ids}
        self.sums = {t: self.sums.get(t, 0.0) for t in track_ids}
        out = []
        for t, f, is_neutral in zip(track_ids, l2_normalise(embeddings).astype(np.float64), neutral):
            kept = self.frames[t]
            if is_neutral:
                if len(kept) == self.keep:
                    self.sums[t] = self.sums[t] - kept[0]
                kept.append(f)
                self.sums[t] = self.sums[t] + f
            if len(kept) < self.warmup:
                out.append(None)
                continue
            mean = self.sums[t] / len(kept)   # of unit vectors: its length is their mean cosine to its direction
            out.append(Reference(l2_normalise(mean), float(np.linalg.norm(mean)), len(kept), "estimated"))
        return out


class EmbeddingSmoother:
    """Per-track temporal smoothing: the mean of each track's last ``window`` representations."""

    def __init__(self, window: int = 5):
        self.window = window
        self.history: dict[int, deque] = {}

    def __call__(self, track_ids: list[int], features: np.ndarray) -> np.ndarray:
        """features [N, d] of the faces with these track ids -> smoothed [N, d]; forgets absent tracks."""
        self.history = {t: self.history.get(t, deque(maxlen=self.window)) for t in track_ids}
        out = np.empty_like(features)
        for i, t in enumerate(track_ids):
            self.history[t].append(features[i])
            out[i] = np.mean(self.history[t], axis=0)
        return out

    def reset(self) -> None:
        self.history = {}


class StreamAnalyzer:
    """One stream of frames (a webcam, a video): MTCNN on a 320-px copy every ``every`` frames
    (boxes reused in between), stable track ids, and each track's representation averaged over its
    last ``window`` frames when smoothing. With a person's ``reference`` (``reference.Reference``)
    every face is scored against it; else, with ``estimate``, each track against its own neutral
    face estimated as it plays (``NeutralEstimates``; plain scores during its warm-up)."""

    def __init__(self, recognizer, detector: FaceDetector | None = None, every: int = 3, window: int = 5,
                 reference=None, estimate: bool = False):
        self.rec = recognizer
        self.reference = reference
        self.estimate = estimate
        self.estimates = NeutralEstimates()
        self.detector = detector or FaceDetector(crop_size=recognizer.input_size, detect_side=STREAM_SIDE,
                                                 min_face_size=STREAM_MIN_FACE)
        self.tracker = FaceTracker(self.detector, every=every)
        self.smoother = EmbeddingSmoother(window)

    def update(self, frame, prompts: Prompts | None = None, smoothing: bool = True) -> list[FaceResult]:
        """One frame [H, W, 3] (any dtype or channel count ``to_rgb`` takes) -> its faces, scored."""
        return self.update_many([frame], prompts, smoothing)[0]

    def update_many(self, frames: list, prompts: Prompts | None = None, smoothing: bool = True) -> list[list[FaceResult]]:
        """Consecutive frames -> each one's faces, scored as ``update`` frame by frame would, but with
        the face crops of all of them embedded in one batch (one encoder call: what a GPU needs, and
        about half the time per face on 2 CPU threads)."""
        rgbs = [to_rgb(frame) for frame in frames]
        tracked = [self.tracker.update(rgb) for rgb in rgbs]
        features = self.rec.embed([f.crop for faces in tracked for f in faces], normalise=False)
        results, start = [], 0
        for rgb, faces in zip(rgbs, tracked):
            results.append(self._score(faces, features[start:start + len(faces)], rgb.shape[:2], prompts, smoothing))
            start += len(faces)
        return results

    def _score(self, faces: list, features: np.ndarray, size: tuple, prompts: Prompts | None,
               smoothing: bool) -> list[FaceResult]:
        """One frame's tracked faces and their representations [N, d] -> FaceResults: smoothed per
        track, scored plainly, against the reference, or against each track's estimated neutral face."""
        if smoothing and faces:
            features = self.smoother([f.track_id for f in faces], features)
        elif not smoothing:
            self.smoother.reset()
        plain = score_faces(self.rec, faces, features, prompts, size=size, reference=self.reference)
        if self.reference is not None or not self.estimate or not faces:
            return plain
        neutral = np.array([f.classes[f.index] == "neutral" for f in plain])
        estimates = self.estimates.update([f.track_id for f in faces], np.stack([f.embedding for f in plain]), neutral)
        return [score_faces(self.rec, [face], features[i:i + 1], prompts, size=size, reference=ref)[0]
                if ref is not None else plain[i] for i, (face, ref) in enumerate(zip(faces, estimates))]


class VideoError(ValueError):
    """A video that cannot be analysed (missing, unreadable, no frames); the message is for the user."""


@dataclass
class VideoFrame:
    """One analysed frame: its index and time in the video, the frame [H, W, 3] RGB, its faces."""

    index: int
    time: float
    rgb: np.ndarray
    faces: list = field(default_factory=list)


class VideoReader:
    """Frames of an OpenCV-readable video as RGB, with corrupt frames skipped and counted.

    Raises VideoError when the file is missing, cannot be opened, or yields no frame at all.
    ``fps``, ``frame_count`` (as the container says; may be 0 for streams) and ``skipped`` (corrupt
    frames passed over so far: unreadable frames followed by a readable one).
    """

    MAX_BAD_RUN = 25   # this many unreadable frames in a row, before the stated end, ends the video

    def __init__(self, path):
        self.path = str(path)
        self.name = os.path.basename(self.path)
        if not os.path.isfile(self.path):
            raise VideoError(f"{self.name}: no such video file.")
        self.capture = cv2.VideoCapture(self.path)
        if not self.capture.isOpened():
            raise VideoError(f"{self.name}: not a video OpenCV can read.")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 0.0
        if not 0 < self.fps < 1000:
            self.fps = 30.0
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.skipped = 0

    def __iter__(self):
        index, bad_run, yielded = 0, 0, 0
        try:
            while True:
                ok, bgr = self.capture.read()
                if ok and bgr is not None and bgr.size:
                    self.skipped += bad_run   # unreadable frames followed by a good one were corrupt
                    bad_run = 0
                    yielded += 1
                    yield index, index / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    index += 1
                    continue
                if 0 < self.frame_count <= index + 1 or bad_run >= self.MAX_BAD_RUN:
                    break              # the stated end, or too many unreadable frames in a row
                bad_run += 1           # perhaps a corrupt frame: read on
                index += 1
        finally:
            self.capture.release()
        if not yielded:
            raise VideoError(f"{self.name}: the video has no readable frame.")


def stream_frames(stream: StreamAnalyzer, reader: VideoReader, batch: int = 1, prompts: Prompts | None = None,
                  smoothing: bool = True):
    """Yield a VideoFrame per frame of ``reader``, its faces tracked and scored by ``stream``, the
    faces of ``batch`` frames at a time embedded together (``StreamAnalyzer.update_many``; at most
    ``batch`` frames are held)."""
    chunk = []
    for item in reader:
        chunk.append(item)
        if len(chunk) == batch:
            yield from _scored(stream, chunk, prompts, smoothing)
            chunk = []
    yield from _scored(stream, chunk, prompts, smoothing)


def _scored(stream: StreamAnalyzer, chunk: list, prompts: Prompts | None, smoothing: bool):
    faces = stream.update_many([rgb for _, _, rgb in chunk], prompts, smoothing) if chunk else []
    for (index, time, rgb), found in zip(chunk, faces):
        yield VideoFrame(index, time, rgb, found)


def analyze_video(recognizer, path, every: int = 3, window: int = 5, prompts: Prompts | None = None,
                  smoothing: bool = True, reader: VideoReader | None = None, reference=None, estimate: bool = False,
                  batch: int = 1):
    """Yield a VideoFrame per frame of the video at ``path``, its faces tracked and scored
    (``StreamAnalyzer``; ``reference``: the person's neutral face; ``estimate``: each track's own,
    estimated as it plays; ``batch``: frames whose faces are embedded together). Corrupt frames are
    skipped (``reader.skipped`` counts them)."""
    reader = reader or VideoReader(path)
    stream = StreamAnalyzer(recognizer, every=every, window=window, reference=reference, estimate=estimate)
    yield from stream_frames(stream, reader, batch, prompts, smoothing)


__all__ = ["FaceResult", "ImageAnalyzer", "StreamAnalyzer", "EmbeddingSmoother", "NeutralEstimates", "VideoReader", "VideoError",
           "VideoFrame", "analyze_video", "stream_frames", "ImageError"]
