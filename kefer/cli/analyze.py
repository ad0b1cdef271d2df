"""The ``kefer`` command line.

    kefer analyze photo.jpg folder/ clip.mp4 --csv faces.csv --json faces.jsonl \\
        --video annotated.mp4 --plot timeline.png --every 3 --model accurate

``analyze`` takes images, folders (searched recursively) and video files, and writes one row per
face: source, frame, time, track, box, each class's probability, label ("uncertain" below the
model's stored abstain margin), top class. The model's stored operating point applies unless
``--no-balance`` / ``--no-abstain``. Unsupported files in a
folder, unreadable images and videos, and corrupt video frames are skipped, counted and listed.

Each video (and each batch of images) goes to its own part file, written whole or not at all, and
a manifest; the outputs get its rows as it finishes, so a Ctrl-C or kill -9 keeps every finished
input's rows and ``--resume`` continues. ``--engine ray`` runs the same work on Ray actors: an
embedded local Ray, or a cluster with ``--address`` (docs/collections.md). This module parses;
``kefer.engine`` runs.

    kefer analyze recordings/ --list more.txt --csv faces.csv --resume --engine ray --workers 4
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2

from ..collection import collect

log = logging.getLogger("kefer")

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


def parts_folder(args) -> Path | None:
    """Where the part files and the manifest go: ``--parts``, else beside the first output
    (faces.csv -> faces.parts); None without an output (a temporary folder)."""
    if args.parts:
        return Path(args.parts)
    first = args.csv or args.json
    return Path(first).with_suffix(".parts") if first else None


def analyze(args) -> int:
    """Run ``kefer analyze``; returns the exit code (0; 1 when some inputs could not be read; 130 when
    interrupted)."""
    import kefer

    from ..analysis import VideoReader
    from ..engine import analyze_collection
    from ..parts import Outputs, row_fields
    from ..worker import Settings

    inputs = collect(args.paths, args.list or [])
    for p in inputs.missing:
        log.error("%s: no such file or folder", p)
    if not inputs.images and not inputs.videos:
        log.error("nothing to analyse: no image or video among %s", ", ".join(args.paths + (args.list or [])))
        return 2
    if args.video and len(inputs.videos) != 1:
        log.error("--video writes one annotated video: give exactly one video file (found %d)", len(inputs.videos))
        return 2
    if args.engine == "ray" and args.video:
        log.error("--video draws the one video's frames in this process: use it with --engine local "
                  "(a video is one unit of work, so Ray would not make it faster)")
        return 2
    folder = parts_folder(args)
    if args.resume and folder is None:
        log.error("--resume needs the run's outputs: give --csv, --json or --parts as before")
        return 2
    if args.threads:   # before the model loads: ONNX Runtime takes torch's thread count then
        import cv2
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    rec = kefer.load(args.model, device=args.device, backend=args.backend, flip=args.flip,
                     balanced=not args.no_balance, abstain=not args.no_abstain)
    log.info("model: %s", rec.summary)
    settings = Settings(model=args.model, backend=args.backend, device=args.device, flip=args.flip,
                        balanced=not args.no_balance, abstain=not args.no_abstain, every=args.every,
                        smoothing=not args.no_smoothing, whole_if_none=args.whole_if_none, batch=args.batch_size,
                        threads=args.threads, reference=read_reference(rec, args.reference),
                        estimate=args.reference == "auto", fmt=args.format)
    outputs = Outputs(args.csv, args.json, row_fields(rec.classes), tracks=bool(args.plot))
    annotated = None
    if args.video:
        reader = VideoReader(inputs.videos[0])
        reader.capture.release()
        annotated = AnnotatedVideo(args.video, reader.fps)

    def on_frame(path, frame):
        annotated.write(frame.rgb, frame.faces)

    temporary = folder is None
    folder = Path(tempfile.mkdtemp(prefix="kefer-parts-")) if temporary else folder
    try:
        summary = analyze_collection(inputs, settings, folder, outputs, engine=args.engine, resume=args.resume,
                                     keep_parts=args.keep_parts and not temporary,
                                     quiet=args.quiet, recognizer=rec, on_frame=on_frame if annotated else None, address=args.address,
                                     workers=args.workers)
    finally:
        if annotated:
            annotated.close()
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
    for e in summary.entries:
        if e["kind"] == "video" and e["status"] == "done":
            log.info("%s: %d frames, %d without a face, %d corrupt frames skipped", os.path.basename(e["input"]),
                     e["frames"], e["faceless"], e["skipped"])
    videos = sum(e["kind"] == "video" and e["status"] == "done" for e in summary.entries)
    warm = f", {summary.warm_rate:.1f} after start-up" if summary.warm_rate else ""
    log.info("%d face rows; this run: %d images and %d videos, %d frames in %.1f s (%.1f frames/s%s)%s", summary.rows,
             sum(e["kind"] == "image" for e in summary.entries), videos, summary.frames, summary.seconds,
             summary.frames / max(summary.seconds, 1e-9), warm,
             f"; {summary.resumed} inputs finished before" if summary.resumed else "")
    if annotated and annotated.writer is not None:
        log.info("annotated video: %s", args.video)
    if args.plot:
        if outputs.tracks:
            from ..viz import plot_timeline   # matplotlib: only for --plot (the core install has none)

            plot_timeline(outputs.tracks, rec.classes, args.plot)
            log.info("timeline: %s", args.plot)
        else:
            log.warning("no timeline plot: no face was tracked in a video")
    report("no face found in", summary.no_face)
    report("skipped (not an image or video)", [str(p) for p in inputs.unsupported])
    report("could not be read", summary.failed)
    if (summary.interrupted or summary.failed) and not temporary:
        log.warning("the part files and manifest are in %s: --resume continues (and retries failures)", folder)
    if summary.interrupted:
        return 130
    return 1 if summary.failed or inputs.missing else 0


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
    a.add_argument("--list", action="append", metavar="FILE",
                   help="a file naming inputs, one path per line (relative to its folder; # comments)")
    a.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the model and the face detector run")
    a.add_argument("--batch-size", type=int, default=16, help="images per batch, and video frames, whose faces are embedded together (default 16)")
    a.add_argument("--threads", type=int, default=None,
                   help="CPU threads of each worker (default: torch's own; with --engine ray, each node's CPUs "
                        "shared out among its workers)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    c = p.add_argument_group("collections: part files, resume, Ray (docs/collections.md)")
    c.add_argument("--parts", metavar="DIR", help="where each input's rows go as it finishes, with the manifest "
                                                  "(default: beside the first output, faces.csv -> faces.parts)")
    c.add_argument("--format", default="csv", choices=("csv", "parquet"), help="the part files' format")
    c.add_argument("--resume", action="store_true",
                   help="skip the inputs a previous run with the same outputs finished (same size and mtime)")
    c.add_argument("--keep-parts", action="store_true",
                   help="keep the part files after a complete run (they are removed; a stopped run keeps them)")
    c.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: this process; ray: Ray actors, one model each (pip install -e '.[ray]')")
    c.add_argument("--address", default=None, metavar="auto|HOST:PORT|ray://HOST:PORT",
                   help="with --engine ray, join this cluster (default: start an embedded local Ray)")
    c.add_argument("--workers", type=int, default=None,
                   help="with --engine ray, how many actors (default: one per CPU, or per GPU with --device cuda)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("every", "batch_size", "workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            log.error("--%s must be 1 or more", name.replace("_", "-"))
            return 2
    for out in (args.csv, args.json, args.video, args.plot, args.parts):
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            log.error("%s: its folder does not exist", out)
            return 2
    if args.address and args.engine != "ray":
        log.error("--address joins a Ray cluster: add --engine ray")
        return 2
    try:
        return analyze(args)
    except (FileNotFoundError, ValueError, ImportError, OSError, RuntimeError) as err:
        log.error("error: %s", err)
        return 2

