"""The ``kefer`` command line.

    kefer analyze photo.jpg folder/ clip.mp4 --csv faces.csv --json faces.jsonl \\
        --video annotated.mp4 --plot timeline.png --every 3 --model accurate

``analyze`` takes images, folders (searched recursively) and video files, and writes one row per
face: source, frame, time, track, box, each class's probability, label ("uncertain" below the
model's stored abstain margin), top class. The model's stored operating point applies unless
``--no-balance`` / ``--no-abstain``. Unsupported files in a
folder, unreadable images and videos, and corrupt video frames are skipped, counted and listed;
rows already written stay written (each file is flushed as it goes, also on Ctrl-C).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

log = logging.getLogger("kefer")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".y4m"}


@dataclass
class Inputs:
    """What ``analyze`` will read: images and videos in order, and what it passed over."""

    images: list = field(default_factory=list)
    videos: list = field(default_factory=list)
    unsupported: list = field(default_factory=list)
    missing: list = field(default_factory=list)


def collect(paths: list[str]) -> Inputs:
    """Sort the command line's paths into images and videos; folders are searched recursively."""
    found = Inputs()
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files = [p]
        else:
            found.missing.append(arg)
            continue
        for f in files:
            suffix = f.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                found.images.append(f)
            elif suffix in VIDEO_SUFFIXES:
                found.videos.append(f)
            else:
                found.unsupported.append(f)
    return found


class Rows:
    """The CSV and JSON-lines outputs, written row by row and flushed after every source."""

    def __init__(self, csv_path: str | None, json_path: str | None, classes: list[str]):
        self.fields = ["source", "frame", "time", "track", "x0", "y0", "x1", "y1",
                       *[f"p_{c}" for c in classes], "label", "top_class", "whole_image", "reference"]
        self.csv_file = open(csv_path, "w", newline="") if csv_path else None
        self.json_file = open(json_path, "w") if json_path else None
        self.writer = csv.DictWriter(self.csv_file, self.fields) if self.csv_file else None
        if self.writer:
            self.writer.writeheader()
        self.count = 0

    def add(self, source: str, frame: int, time: float, faces: list) -> None:
        for face in faces:
            row = {"source": source, "frame": frame, "time": round(time, 3), **face.as_dict()}
            if self.writer:
                self.writer.writerow(row)
            if self.json_file:
                self.json_file.write(json.dumps(row) + "\n")
            self.count += 1

    def flush(self) -> None:
        for f in (self.csv_file, self.json_file):
            if f:
                f.flush()

    def close(self) -> None:
        for f in (self.csv_file, self.json_file):
            if f:
                f.close()


class AnnotatedVideo:
    """An annotated copy of one video: boxes and labels drawn on every frame (mp4v, or MJPG for .avi)."""

    def __init__(self, path: str, fps: float):
        self.path, self.fps, self.writer = path, fps, None

    def write(self, rgb, faces) -> None:
        from ..faces import class_colour, draw

        if self.writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.lower().endswith(".avi") else "mp4v"))
            self.writer = cv2.VideoWriter(self.path, fourcc, self.fps, (rgb.shape[1], rgb.shape[0]))
            if not self.writer.isOpened():
                raise OSError(f"cannot write a video to {self.path}; use a .mp4 or .avi name")
        frame = draw(rgb, faces, [f.label_text for f in faces], [class_colour(f.index) for f in faces])
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def analyze(args) -> int:
    """Run ``kefer analyze``; returns the exit code (0, or 1 when some inputs could not be read)."""
    import kefer

    from ..analysis import ImageAnalyzer, ImageError, VideoError, VideoReader, analyze_video

    inputs = collect(args.paths)
    for p in inputs.missing:
        log.error("%s: no such file or folder", p)
    if not inputs.images and not inputs.videos:
        log.error("nothing to analyse: no image or video among %s", ", ".join(args.paths))
        return 2
    if args.video and len(inputs.videos) != 1:
        log.error("--video writes one annotated video: give exactly one video file (found %d)", len(inputs.videos))
        return 2
    rec = kefer.load(args.model, backend=args.backend, flip=args.flip, balanced=not args.no_balance,
                     abstain=not args.no_abstain)
    log.info("model: %s", rec.summary)
    reference = read_reference(rec, args.reference)
    rows = Rows(args.csv, args.json, rec.classes)
    failed, no_face, timeline, videos = [], [], {}, 0
    total = len(inputs.images) + sum(max(frame_count(v), 1) for v in inputs.videos)
    bar = tqdm(total=total, unit="frame", desc="analysing", disable=args.quiet)
    annotated = None
    try:
        images = ImageAnalyzer(rec)
        for path in inputs.images:
            try:
                faces = images.analyze(path, whole_if_none=args.whole_if_none, reference=reference)
            except ImageError as err:
                failed.append(str(err))
            else:
                if faces:
                    rows.add(str(path), 0, 0.0, faces)
                else:
                    no_face.append(str(path))
            rows.flush()
            bar.update()
        for path in inputs.videos:
            try:
                reader = VideoReader(path)
            except VideoError as err:
                failed.append(str(err))
                continue
            videos += 1
            if args.video:
                annotated = AnnotatedVideo(args.video, reader.fps)
            frames = faceless = 0
            try:
                for frame in analyze_video(rec, reader.path, every=args.every, reader=reader,
                                           smoothing=not args.no_smoothing, reference=reference,
                                           estimate=args.reference == "auto"):
                    rows.add(reader.path, frame.index, frame.time, frame.faces)
                    for face in frame.faces:
                        timeline.setdefault((reader.path, face.track_id), []).append((frame.time, face.probabilities))
                    if annotated:
                        annotated.write(frame.rgb, frame.faces)
                    frames, faceless = frames + 1, faceless + (not frame.faces)
                    bar.update()
            except VideoError as err:
                failed.append(str(err))
            rows.flush()
            log.info("%s: %d frames, %d without a face, %d corrupt frames skipped", reader.name, frames, faceless,
                     reader.skipped)
    except KeyboardInterrupt:
        log.warning("interrupted: the rows written so far are kept")
    finally:
        bar.close()
        rows.close()
        if annotated:
            annotated.close()
    log.info("%d face rows from %d images and %d videos", rows.count, len(inputs.images), videos)
    if args.video and annotated and annotated.writer is not None:
        log.info("annotated video: %s", args.video)
    if args.plot:
        if timeline:
            from ..viz import plot_timeline   # matplotlib: only for --plot (the core install has none)

            plot_timeline(timeline, rec.classes, args.plot)
            log.info("timeline: %s", args.plot)
        else:
            log.warning("no timeline plot: no face was tracked in a video")
    report("no face found in", no_face)
    report("skipped (not an image or video)", [str(p) for p in inputs.unsupported])
    report("could not be read", failed)
    return 1 if failed or inputs.missing else 0


def read_reference(rec, spec: str):
    """``--reference``: None for 'none' and 'auto', else the ``Reference`` of the largest face in each photo at
    ``spec`` (a file or a folder). ValueError naming the photos without a face, or with none at all."""
    from ..faces import ImageError

    if spec in ("none", "auto"):
        return None
    photos = collect([spec])
    if photos.missing or not photos.images:
        raise ValueError(f"--reference {spec}: no such photo or folder of photos (or 'none')")
    crops, faceless = [], []
    for path in photos.images:
        try:
            faces = rec.analyze(path)
        except ImageError as err:
            raise ValueError(f"--reference: {err}") from err
        if faces:
            crops.append(faces[0].crop)
        else:
            faceless.append(str(path))
    if faceless:
        raise ValueError(f"--reference: no face found in {', '.join(faceless)}; give photos of the person's neutral face")
    reference = rec.reference(crops)
    log.info("reference: %d neutral face(s) from %s (spread %.3f)", reference.count, spec, reference.spread)
    return reference


def frame_count(path) -> int:
    """The frame count a video's container states (0 when unknown or unreadable), for the progress bar."""
    capture = cv2.VideoCapture(str(path))
    try:
        return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
    finally:
        capture.release()


def report(what: str, items: list[str], show: int = 20) -> None:
    if items:
        more = f" (+{len(items) - show} more)" if len(items) > show else ""
        log.warning("%d %s: %s%s", len(items), what, "; ".join(items[:show]), more)


def parser() -> argparse.ArgumentParser:
    a = p = argparse.ArgumentParser(prog="kefer analyze", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("paths", nargs="+", help="image files, video files and folders (searched recursively)")
    a.add_argument("--csv", help="write one row per face to this CSV file")
    a.add_argument("--json", help="write one JSON object per face to this .jsonl file")
    a.add_argument("--video", help="write the (one) input video annotated with boxes and labels (.mp4 or .avi)")
    a.add_argument("--plot", help="write a timeline of each video track's class probabilities (.png)")
    a.add_argument("--every", type=int, default=3, help="in videos, detect faces every N frames (default 3); "
                                                       "tracked boxes are reused in between")
    a.add_argument("--model", default=None, help="a shipped model name, run dir, .safetensors or .onnx file "
                                                 "(default: the default model)")
    a.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"))
    a.add_argument("--flip", action="store_true", help="average each face with its mirror image (twice the cost)")
    a.add_argument("--no-balance", action="store_true",
                   help="raw scores: ignore the model's stored balance strength (prior correction)")
    a.add_argument("--no-abstain", action="store_true",
                   help="always name a class: ignore the model's stored abstain margin")
    a.add_argument("--no-smoothing", action="store_true", help="score each video frame on its own")
    a.add_argument("--whole-if-none", action="store_true",
                   help="score an image with no face found as one face (the whole image)")
    a.add_argument("--reference", default="none", metavar="none|auto|PHOTO",
                   help="score every face relative to this person's neutral face: a photo of it, or a folder of "
                        "such photos (the largest face of each); 'auto': in videos, each track relative to its "
                        "own neutral face estimated as it plays (images stay plain); 'none' (default): plain "
                        "scores. The CSV's 'reference' column says which was used")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.every < 1:
        log.error("--every must be 1 or more")
        return 2
    for out in (args.csv, args.json, args.video, args.plot):
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            log.error("%s: its folder does not exist", out)
            return 2
    try:
        return analyze(args)
    except (FileNotFoundError, ValueError, ImportError, OSError) as err:
        log.error("error: %s", err)
        return 2

