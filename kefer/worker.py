"""One worker of a collection's analysis: the model loaded once, then unit after unit into part files.

    worker = Worker(Settings(model="accurate", every=3))
    entries = worker.run(Unit("video", ("clip.mp4",)), Path("faces.parts"))   # manifest entries

A video unit is read frame by frame (``VideoReader``), its faces tracked, embedded ``batch``
frames at a time and scored (``stream_frames``), and its rows streamed into the part file: memory
does not grow with the video's length. An image unit detects faces image by image and embeds them in one batch. A broken
input becomes a "failed" entry with a message for the user; the other inputs of its unit go on.
The same worker runs in the single-process engine and inside each Ray actor.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .analysis import (PHOTO_MIN_FACE, PHOTO_SIDE, STREAM_MIN_FACE, STREAM_SIDE, ImageAnalyzer, StreamAnalyzer,
                       VideoError, VideoFrame, VideoReader, stream_frames)
from .collection import Unit, stat_key
from .faces import FaceDetector, ImageError
from .io import atomic_write
from .parts import PartWriter, row_fields

log = logging.getLogger("kefer")


@dataclass
class Settings:
    """How to analyse: the model and its options (``kefer.load``), the video pipeline (detect every
    ``every`` frames, per-track smoothing, a person's ``reference`` or each track's ``estimate``d
    one), ``whole_if_none`` for images, ``batch``: images per unit and video frames whose faces are
    embedded together, ``fmt`` of the part files, and ``threads`` for this worker (None: leave
    torch's setting)."""

    model: str | None = None
    backend: str = "auto"
    device: str = "cpu"
    flip: bool = False
    balanced: bool = True
    abstain: bool = True
    every: int = 3
    smoothing: bool = True
    whole_if_none: bool = False
    batch: int = 16
    reference: object = None
    estimate: bool = False
    fmt: str = "csv"
    threads: int | None = None


def face_rows(source: str, frame: int, time: float, faces: list) -> list[dict]:
    """One row per face (``parts.row_fields``): where it was found, then ``FaceResult.as_dict``."""
    return [{"source": source, "frame": frame, "time": round(time, 3), **f.as_dict()} for f in faces]


class Worker:
    """A loaded model and the detectors, turning units into part files and manifest entries.
    ``unit_frames``: frames and images of the current unit analysed so far (for the progress display)."""

    def __init__(self, settings: Settings, recognizer=None):
        import cv2
        import torch

        import kefer

        if settings.threads:   # torch's, so ONNX Runtime's (kefer.backend), and OpenCV's
            torch.set_num_threads(settings.threads)
            cv2.setNumThreads(settings.threads)
        self.settings = settings
        self.rec = recognizer or kefer.load(settings.model, device=settings.device, backend=settings.backend,
                                            flip=settings.flip, balanced=settings.balanced, abstain=settings.abstain)
        self.fields = row_fields(self.rec.classes)
        self.images = ImageAnalyzer(self.rec, FaceDetector(settings.device, self.rec.input_size, PHOTO_SIDE,
                                                           PHOTO_MIN_FACE))
        self.unit_frames = 0

    def run(self, unit: Unit, folder: Path, on_frame: Callable[[str, VideoFrame], None] | None = None) -> list[dict]:
        """Analyse one unit into ``folder``/<unit.part>.<fmt> (whole or absent) -> one manifest entry per
        input. ``on_frame(path, frame)`` sees every analysed video frame (annotated videos)."""
        part = f"{unit.part}.{self.settings.fmt}"
        self.unit_frames = 0
        self.keys = {p: stat_key(p) for p in unit.paths}   # as read: a change while it runs is redone on resume
        entries = []

        def write(tmp: Path) -> None:
            writer = PartWriter(tmp, self.fields, self.settings.fmt)
            try:
                if unit.kind == "video":
                    entries.append(self._video(unit.paths[0], writer, on_frame))
                else:
                    entries.extend(self._images(unit.paths, writer))
            finally:
                writer.close()

        atomic_write(Path(folder) / part, write)
        for e in entries:
            e["part"] = part if e["status"] == "done" else None
        return entries

    def _entry(self, path: str, kind: str, **values) -> dict:
        return {"input": path, "kind": kind, **self.keys[path], **values}

    @staticmethod
    def failed_entry(path: str, kind: str, error: str) -> dict:
        """The manifest entry of an input that could not be analysed, ``error`` saying why."""
        return {"input": path, "kind": kind, **stat_key(path), "status": "failed", "error": error, "part": None}

    def _video(self, path: str, writer: PartWriter, on_frame) -> dict:
        s = self.settings
        try:
            reader = VideoReader(path)
            detector = FaceDetector(s.device, self.rec.input_size, STREAM_SIDE, STREAM_MIN_FACE)
            stream = StreamAnalyzer(self.rec, detector, every=s.every, reference=s.reference, estimate=s.estimate)
            frames = faceless = rows = 0
            for frame in stream_frames(stream, reader, s.batch, smoothing=s.smoothing):
                writer.add(face_rows(path, frame.index, frame.time, frame.faces))
                frames, faceless, rows = frames + 1, faceless + (not frame.faces), rows + len(frame.faces)
                self.unit_frames += 1
                if on_frame:
                    on_frame(path, frame)
        except (VideoError, ImageError) as err:
            return self._entry(path, "video", status="failed", error=str(err))
        except Exception as err:   # noqa: BLE001 - a broken input is reported, the run goes on
            log.debug("%s failed", path, exc_info=True)
            return self._entry(path, "video", status="failed", error=f"{Path(path).name}: {type(err).__name__}: {err}")
        return self._entry(path, "video", status="done", rows=rows, frames=frames, faceless=faceless, skipped=reader.skipped)

    def _images(self, paths: tuple, writer: PartWriter) -> list[dict]:
        s = self.settings
        try:
            results = self.images.analyze_many(list(paths), whole_if_none=s.whole_if_none, reference=s.reference)
        except Exception:   # noqa: BLE001 - some image is broken: one by one, to name it
            results = None
        entries = []
        for i, path in enumerate(paths):
            try:
                faces = results[i] if results is not None else self.images.analyze(
                    path, whole_if_none=s.whole_if_none, reference=s.reference)
            except ImageError as err:
                entries.append(self._entry(path, "image", status="failed", error=str(err)))
                continue
            except Exception as err:   # noqa: BLE001
                entries.append(self._entry(path, "image", status="failed",
                                           error=f"{Path(path).name}: {type(err).__name__}: {err}"))
                continue
            finally:
                self.unit_frames += 1
            writer.add(face_rows(path, 0, 0.0, faces))
            entries.append(self._entry(path, "image", status="done", rows=len(faces), frames=1))
        return entries
