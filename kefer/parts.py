"""Part files and the manifest: an analysis that a kill loses nothing of and a resume finishes.

    PARTS/
      manifest.jsonl            one line per finished input: size, mtime, status, its part file
      video-<hash>.csv          one part per video (or .parquet, ``fmt``)
      images-<hash>.csv         one part per batch of images

A part is written to a temporary file and renamed when its unit is finished (``kefer.io.atomic_write``),
so it is whole or absent; the manifest line comes after the rename, so a line names a whole part.
Outputs (CSV, JSON lines) are gathered from the parts the manifest names, filtered to the inputs
whose latest line names that part: a retried unit, or one re-run after a kill, adds no duplicate.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .io import atomic_write

MANIFEST = "manifest.jsonl"
FORMATS = ("csv", "parquet")
PARQUET_GROUP = 4096   # rows per Parquet row group: a part is written in constant memory


def row_fields(classes: list[str]) -> list[str]:
    """The columns of a face row: source, frame, time, track, box, one probability per class, label,
    top class, whether the whole image stood in, which reference was used."""
    return ["source", "frame", "time", "track", "x0", "y0", "x1", "y1", *[f"p_{c}" for c in classes],
            "label", "top_class", "whole_image", "reference"]


def typed(row: dict) -> dict:
    """A row read back from CSV text -> the values it was written from (ints, floats, bools)."""
    out = {}
    for k, v in row.items():
        if k in ("frame", "track"):
            out[k] = int(v)
        elif k == "whole_image":
            out[k] = v in (True, "True")
        elif k in ("source", "label", "top_class", "reference"):
            out[k] = v
        else:
            out[k] = float(v)
    return out


class PartWriter:
    """Rows into one open part file (``tmp``, renamed by the caller's atomic write), streamed:
    CSV rows as they come, Parquet in row groups of ``PARQUET_GROUP``."""

    def __init__(self, tmp: Path, fields: list[str], fmt: str = "csv"):
        self.fields, self.fmt, self.count, self.pending = fields, fmt, 0, []
        if fmt == "csv":
            self.file = open(tmp, "w", newline="")
            self.writer = csv.DictWriter(self.file, fields)
            self.writer.writeheader()
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {"source": pa.string(), "label": pa.string(), "top_class": pa.string(), "reference": pa.string(),
                     "frame": pa.int64(), "track": pa.int64(), "whole_image": pa.bool_()}
            self.schema = pa.schema([(f, types.get(f, pa.float64())) for f in fields])
            self.writer = pq.ParquetWriter(str(tmp), self.schema)

    def add(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.count += 1
            if self.fmt == "csv":
                self.writer.writerow(row)
            else:
                self.pending.append(row)
        if len(self.pending) >= PARQUET_GROUP:
            self._write_group()

    def _write_group(self) -> None:
        import pyarrow as pa

        if self.pending:
            self.writer.write_table(pa.Table.from_pylist(self.pending, schema=self.schema))
            self.pending = []

    def close(self) -> None:
        if self.fmt == "csv":
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        else:
            self._write_group()
            self.writer.close()


def read_part(path: Path) -> Iterator[dict]:
    """The rows of a part file, typed, in the order written (Parquet one row group at a time)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        data = pq.ParquetFile(str(path))
        for group in range(data.num_row_groups):
            yield from data.read_row_group(group).to_pylist()
    else:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                yield typed(row)


class Manifest:
    """The append-only record of finished inputs in a parts folder: {input: its latest entry}.

    An entry: input, size, mtime_ns, status ("done" or "failed"), part (a file name, or None with
    no row), rows, frames, and for failures the error. A line torn by a kill is ignored."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                self.entries[entry["input"]] = entry

    def finished(self, path: str, key: dict) -> bool:
        """Whether ``path`` was analysed as it is now (same ``key``: size and mtime) with its part whole."""
        e = self.entries.get(path)
        return (e is not None and e["status"] == "done" and e["size"] == key["size"]
                and e["mtime_ns"] == key["mtime_ns"] and (e["part"] is None or (self.folder / e["part"]).exists()))

    def record(self, entries: list[dict]) -> None:
        """Append entries, one line each, in one write, flushed to disk."""
        self.folder.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(e) + "\n" for e in entries)
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for e in entries:
            self.entries[e["input"]] = e

    def rows(self, order: list[str]) -> Iterator[dict]:
        """Every finished input's rows, parts in the order of their first input in ``order``, each
        part's rows filtered to the inputs whose latest entry names it."""
        owners: dict[str, set] = {}
        for path in order:
            e = self.entries.get(path)
            if e is not None and e["status"] == "done" and e["part"]:
                owners.setdefault(e["part"], set()).add(path)
        for part, sources in owners.items():
            yield from self.rows_of(part, sources)

    def rows_of(self, part: str, sources: set) -> Iterator[dict]:
        """The rows of one part whose source is among ``sources``."""
        return (r for r in read_part(self.folder / part) if r["source"] in sources)

    def tidy(self) -> None:
        """Remove part files no entry names and temporary files left by a kill."""
        named = {e["part"] for e in self.entries.values() if e.get("part")}
        for f in self.folder.iterdir():
            if f.name != MANIFEST and (f.name not in named or f.name.endswith(".tmp")):
                f.unlink(missing_ok=True)


class Outputs:
    """The CSV and JSON-lines files the user asked for. Rows are appended as each unit finishes, in
    one write per unit (a kill leaves whole rows of finished inputs only); ``rewrite`` writes them
    whole, in input order, through a temporary file and a rename. With ``tracks``, ``rewrite`` also
    gathers each video track's probabilities for a timeline plot (``viz.plot_timeline``):
    ``self.tracks`` {(video, track id): [(time s, probabilities [K]), ...]}, whichever engine made the rows."""

    def __init__(self, csv_path: str | None, json_path: str | None, fields: list[str], tracks: bool = False):
        self.csv_path, self.json_path, self.fields = csv_path, json_path, fields
        self.tracks = {} if tracks else None

    def _write(self, f, rows: Iterable[dict], kind: str, header: bool = False) -> None:
        if kind == "csv":
            writer = csv.DictWriter(f, self.fields)
            if header:
                writer.writeheader()
            writer.writerows(rows)
        else:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def append(self, rows: list[dict]) -> None:
        for path, kind in ((self.csv_path, "csv"), (self.json_path, "json")):
            if path and rows:
                buffer = io.StringIO()
                self._write(buffer, rows, kind)
                with open(path, "a", newline="") as f:
                    f.write(buffer.getvalue())

    def rewrite(self, rows: Callable[[], Iterable[dict]]) -> None:
        """Each output written whole from ``rows()`` (a fresh iterator per output, streamed)."""
        for path, kind in ((self.csv_path, "csv"), (self.json_path, "json")):
            if path:
                atomic_write(path, lambda tmp, kind=kind: self._write_file(tmp, rows(), kind))
        if self.tracks is not None:
            self.tracks.clear()
            probabilities = [f for f in self.fields if f.startswith("p_")]
            for r in rows():
                if int(r["track"]) >= 0:   # video faces (an image's face has track -1)
                    self.tracks.setdefault((r["source"], int(r["track"])), []).append(
                        (float(r["time"]), [float(r[p]) for p in probabilities]))

    def _write_file(self, tmp: Path, rows: Iterable[dict], kind: str) -> None:
        with open(tmp, "w", newline="") as f:
            self._write(f, rows, kind, header=True)
