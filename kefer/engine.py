"""Analyse a collection: inputs -> part files, a manifest, and the CSV / JSON lines asked for.

    summary = analyze_collection(collect(["photos/", "clips/"]), Settings(), "faces.parts",
                                 Outputs("faces.csv", None, fields), engine="local")
    summary = analyze_collection(..., engine="ray", address=None, workers=2)   # an embedded local Ray
    summary = analyze_collection(..., resume=True)     # skip inputs finished as they are now

The ``Collection`` is the driver that both engines share: it skips finished inputs on resume,
appends each unit's rows to the outputs once its part is whole and then records its entries in
the manifest, shows progress and, at the end, rewrites the outputs in input order from the parts.
The local engine runs one ``Worker`` in this process; ``kefer.ray_engine`` runs one per Ray actor.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from .collection import Inputs, Unit, stat_key, units
from .parts import MANIFEST, Manifest, Outputs
from .progress import Progress
from .worker import Settings, Worker

log = logging.getLogger("kefer")

ENGINES = ("local", "ray")
APPEND_CHUNK = 2000   # rows per write when a finished unit's rows are appended to the outputs


@dataclass
class Summary:
    """What a run did: this run's entries (inputs done or failed), inputs skipped as finished
    before, face rows in the outputs, frames analysed, whether it was interrupted."""

    entries: list = field(default_factory=list)
    resumed: int = 0
    rows: int = 0
    frames: int = 0
    seconds: float = 0.0
    warm_rate: float | None = None   # frames/s from the first frames done on (start-up left out)
    interrupted: bool = False

    @property
    def failed(self) -> list[str]:
        return [e["error"] for e in self.entries if e["status"] == "failed"]

    @property
    def no_face(self) -> list[str]:
        return [e["input"] for e in self.entries if e["status"] == "done" and e["kind"] == "image" and not e["rows"]]


def frame_count(path) -> int:
    """The frame count a video's container states (0 when unknown or unreadable)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
    finally:
        capture.release()


def clear_parts(folder: Path) -> None:
    """Empty a parts folder for a fresh run; ValueError where it holds files that are not parts."""
    if not folder.exists():
        return
    ours = [f for f in folder.iterdir() if f.name == MANIFEST or f.name.startswith(("video-", "images-"))]
    others = [f.name for f in folder.iterdir() if f not in ours]
    if others:
        raise ValueError(f"{folder} holds files that are not part files ({', '.join(others[:3])}); "
                         f"choose another --parts folder")
    for f in ours:
        f.unlink()


class Collection:
    """The driver: the manifest and outputs of one run over ``inputs`` in ``folder``."""

    def __init__(self, inputs: Inputs, folder: str | Path, outputs: Outputs, resume: bool = False,
                 quiet: bool = False):
        self.folder, self.outputs = Path(folder), outputs
        self.order = [str(p) for p in [*inputs.images, *inputs.videos]]
        if not resume:
            clear_parts(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.folder)
        self.manifest.tidy()
        self.outputs.rewrite(lambda: self.manifest.rows(self.order))   # on resume: what was finished, whole
        finished = {p for p in self.order if self.manifest.finished(p, stat_key(p))} if resume else set()
        self.images = [str(p) for p in inputs.images if str(p) not in finished]
        self.videos = [str(p) for p in inputs.videos if str(p) not in finished]
        self.summary = Summary(resumed=len(finished))
        if finished:
            log.info("resuming: %d of %d inputs finished before", len(finished), len(self.order))
        frames = len(self.images) + sum(max(frame_count(v), 1) for v in self.videos)
        self.progress = Progress(len(self.images) + len(self.videos), frames, quiet)

    def units(self, batch: int) -> list[Unit]:
        return units(self.images, self.videos, batch)

    def record(self, entries: list[dict]) -> None:
        """A unit's entries, its part whole: its rows onto the outputs, then into the manifest, so
        that a kill between the two leaves no input the manifest calls done without its rows in
        the outputs (a resume rewrites the outputs from the parts, so no row is doubled either)."""
        sources = {e["input"] for e in entries if e["status"] == "done"}
        parts = {e["part"] for e in entries if e["status"] == "done"}
        chunk = []
        for part in parts:
            for row in self.manifest.rows_of(part, sources):
                chunk.append(row)
                if len(chunk) >= APPEND_CHUNK:
                    self.outputs.append(chunk)
                    chunk = []
        self.outputs.append(chunk)
        self.manifest.record(entries)
        self.summary.entries.extend(entries)
        self.summary.frames += sum(e.get("frames", 0) for e in entries)
        done = sum(e["status"] == "done" for e in self.summary.entries)
        self.progress.inputs(done, len(self.summary.entries) - done)

    def finish(self, keep_parts: bool) -> Summary:
        """Rewrite the outputs whole, in input order; remove the parts folder when every input is
        finished and nothing failed (unless ``keep_parts``)."""
        self.progress.close()
        self.summary.seconds, self.summary.warm_rate = self.progress.elapsed(), self.progress.warm_rate()
        self.outputs.rewrite(lambda: self.manifest.rows(self.order))
        entries = [self.manifest.entries.get(p) for p in self.order]
        self.summary.rows = sum(e.get("rows", 0) for e in entries if e and e["status"] == "done")
        complete = not self.summary.interrupted and not self.summary.failed and \
            len(self.summary.entries) + self.summary.resumed >= len(self.order)
        if complete and not keep_parts:
            shutil.rmtree(self.folder, ignore_errors=True)
        return self.summary


def run_local(collection: Collection, settings: Settings, recognizer=None, on_frame=None) -> None:
    """The single-process engine: one worker, unit after unit."""
    worker = Worker(settings, recognizer)

    def frame(path, video_frame):
        collection.progress.frames(collection.summary.frames + worker.unit_frames)
        if on_frame:
            on_frame(path, video_frame)

    for unit in collection.units(settings.batch):
        collection.record(worker.run(unit, collection.folder, frame))
        collection.progress.frames(collection.summary.frames)


def analyze_collection(inputs: Inputs, settings: Settings, folder: str | Path, outputs: Outputs,
                       engine: str = "local", resume: bool = False, keep_parts: bool = False,
                       quiet: bool = False, recognizer=None, on_frame=None, address: str | None = None,
                       workers: int | None = None) -> Summary:
    """Analyse every input not finished before (``resume``) into part files in ``folder`` and the
    ``outputs``; Ctrl-C stops it with the finished inputs' rows written (``Summary.interrupted``).
    ``engine`` "local": this process (``recognizer`` reused, ``on_frame(path, VideoFrame)`` sees
    each video frame); "ray": Ray actors (``address``: a cluster, None: an embedded local Ray;
    ``workers``: how many, None: one per CPU)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    collection = Collection(inputs, folder, outputs, resume, quiet)
    try:
        if engine == "local":
            run_local(collection, settings, recognizer, on_frame)
        else:
            from .ray_engine import run_ray

            run_ray(collection, settings, address, workers)
    except KeyboardInterrupt:
        collection.summary.interrupted = True
        log.warning("interrupted: the finished inputs' rows are written; --resume continues")
    return collection.finish(keep_parts)
