"""A collection of inputs: the images and videos that files, folders and list files name.

    inputs = collect(["photos/", "clip.mp4"], lists=["paths.txt"])
    inputs.images, inputs.videos          # [Path] each, in the order given (folders sorted)
    inputs.unsupported, inputs.missing    # passed over, for the report
    units(inputs, batch=16)               # [Unit]: one per video, images in batches of 16

Folders are searched recursively; symbolic links to folders are followed once (a link loop is
visited once and reported). A list file holds one path per line (blank lines and lines starting
with ``#`` are ignored); relative paths are relative to the list file's folder.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".y4m"}


@dataclass
class Inputs:
    """What an analysis will read: images and videos in order, and what it passed over (unsupported
    files; missing paths, with why)."""

    images: list = field(default_factory=list)
    videos: list = field(default_factory=list)
    unsupported: list = field(default_factory=list)
    missing: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.images) + len(self.videos)


@dataclass(frozen=True)
class Unit:
    """One piece of work: a video (``kind`` "video", one path; its tracks need its frames in order)
    or a batch of images (``kind`` "images"). ``part``: the name of its part file, without suffix,
    the same whenever the same inputs make a unit (a retry overwrites, never adds)."""

    kind: str
    paths: tuple

    @property
    def part(self) -> str:
        digest = hashlib.sha1("\n".join(map(str, self.paths)).encode()).hexdigest()[:16]
        return f"{self.kind}-{digest}"


def walk(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted; linked folders are followed, each real folder once."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found.extend(Path(root) / f for f in files)
    return sorted(found)


def read_list(path: str | Path) -> list[str]:
    """The paths a list file names, one per line (``#`` comments and blank lines skipped); relative
    ones are taken relative to the list file's folder."""
    path = Path(path)
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(str(path.parent / line) if not os.path.isabs(line) else line)
    return out


def collect(paths: list[str], lists: list[str] = ()) -> Inputs:
    """Sort paths (and those of list files) into images and videos; folders are searched
    recursively. A path given twice is read once."""
    found, seen = Inputs(), set()
    for listed in lists:
        try:
            paths = [*paths, *read_list(listed)]
        except (OSError, UnicodeDecodeError) as err:
            found.missing.append(f"{listed} (list file: {type(err).__name__})")
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            files = walk(p)
        elif p.is_file():
            files = [p]
        else:
            found.missing.append(str(arg))
            continue
        for f in files:
            if str(f) in seen:
                continue
            seen.add(str(f))
            suffix = f.suffix.lower()
            if not f.is_file():   # a dangling link, a link loop, a socket
                found.unsupported.append(f)
            elif suffix in IMAGE_SUFFIXES:
                found.images.append(f)
            elif suffix in VIDEO_SUFFIXES:
                found.videos.append(f)
            else:
                found.unsupported.append(f)
    return found


def units(images: list, videos: list, batch: int = 16) -> list[Unit]:
    """Units of work: images in batches of ``batch`` (in order), then one unit per video."""
    out = [Unit("images", tuple(str(p) for p in images[i:i + batch])) for i in range(0, len(images), batch)]
    return out + [Unit("video", (str(v),)) for v in videos]


def stat_key(path: str | Path) -> dict:
    """What says an input is unchanged since it was analysed: its size and modification time (ns);
    -1 each for a path that is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return {"size": -1, "mtime_ns": -1}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
