"""The collection's bookkeeping, without a model: inputs and list files, part files (CSV, Parquet),
the manifest (torn lines, changed inputs, orphans), the outputs, the progress line and how Ray actors
share out the CPUs and GPUs."""
from __future__ import annotations

import csv
import json
import logging
import os

import pytest

from kefer.collection import Unit, collect, stat_key, units
from kefer.parts import Manifest, Outputs, PartWriter, read_part, row_fields
from kefer.progress import Progress

FIELDS = row_fields(["neutral", "happiness"])


def row(source: str, frame: int = 0, track: int = -1, p: float = 0.25) -> dict:
    return {"source": source, "frame": frame, "time": frame / 15, "track": track, "x0": 1.5, "y0": 2.0, "x1": 30.0,
            "y1": 40.5, "p_neutral": p, "p_happiness": 1 - p, "label": "happiness", "top_class": "happiness",
            "whole_image": False, "reference": "none"}


def write_part(folder, name: str, rows: list[dict], fmt: str = "csv") -> None:
    writer = PartWriter(folder / name, FIELDS, fmt)
    writer.add(rows)
    writer.close()


def test_inputs_from_folders_and_list_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.jpg", "a/b/two.PNG", "a/b/clip.mp4", "a/notes.txt", "three.jpg"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\nthree.jpg\na/one.jpg\nnowhere.mp4\n")
    found = collect([str(tmp_path / "a")], lists=[str(listing)])
    assert [p.name for p in found.images] == ["two.PNG", "one.jpg", "three.jpg"]   # sorted paths; one.jpg once
    assert [p.name for p in found.videos] == ["clip.mp4"]
    assert [p.name for p in found.unsupported] == ["notes.txt"]
    assert found.missing == [str(tmp_path / "nowhere.mp4")]
    assert collect([], lists=[str(tmp_path / "no-list.txt")]).missing[0].startswith(str(tmp_path / "no-list.txt"))


def test_units_batch_images_and_give_each_video_its_own():
    made = units([f"i{k}.jpg" for k in range(5)], ["a.mp4", "b.mp4"], batch=2)
    assert [(u.kind, len(u.paths)) for u in made] == [("images", 2), ("images", 2), ("images", 1), ("video", 1),
                                                      ("video", 1)]
    assert made[3].part == Unit("video", ("a.mp4",)).part != made[4].part   # the same inputs, the same part


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_part_reads_back_as_written(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet parts need pyarrow (the ray extra installs it)")
    rows = [row("v.mp4", k, 0, p=k / 10) for k in range(10)]
    write_part(tmp_path, f"video-x.{fmt}", rows, fmt)
    assert list(read_part(tmp_path / f"video-x.{fmt}")) == rows


def test_manifest_skips_a_torn_line_and_notices_a_changed_input(tmp_path):
    image = tmp_path / "face.jpg"
    image.write_bytes(b"jpeg")
    parts = tmp_path / "parts"
    parts.mkdir()
    manifest = Manifest(parts)
    write_part(parts, "images-a.csv", [row(str(image))])
    manifest.record([{"input": str(image), "kind": "image", **stat_key(image), "status": "done", "part": "images-a.csv",
                      "rows": 1, "frames": 1}])
    with open(parts / "manifest.jsonl", "a") as f:
        f.write('{"input": "torn')   # a kill mid-line
    again = Manifest(parts)
    assert again.finished(str(image), stat_key(image))
    os.utime(image, ns=(1, 1))
    assert not again.finished(str(image), stat_key(image))   # a changed input is analysed again
    (parts / "images-a.csv").unlink()
    assert not again.finished(str(image), {**stat_key(image), "mtime_ns": 1})


def test_rows_come_from_the_latest_entry_only_and_orphans_are_tidied(tmp_path):
    manifest = Manifest(tmp_path)
    write_part(tmp_path, "images-old.csv", [row("a.jpg"), row("b.jpg")])
    write_part(tmp_path, "images-new.csv", [row("b.jpg", p=0.9)])
    write_part(tmp_path, "video-orphan.csv", [row("v.mp4")])            # its unit was killed before recording
    (tmp_path / "video-x.csv.123.456.tmp").write_text("half a row")
    entry = {"kind": "image", "size": 1, "mtime_ns": 1, "status": "done", "rows": 1, "frames": 1}
    manifest.record([{**entry, "input": "a.jpg", "part": "images-old.csv"}, {**entry, "input": "b.jpg",
                                                                            "part": "images-old.csv"}])
    manifest.record([{**entry, "input": "b.jpg", "part": "images-new.csv"}])   # b.jpg analysed again
    rows = list(Manifest(tmp_path).rows(["a.jpg", "b.jpg", "v.mp4"]))
    assert [(r["source"], r["p_neutral"]) for r in rows] == [("a.jpg", 0.25), ("b.jpg", 0.9)]   # no duplicate
    manifest.tidy()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["images-new.csv", "images-old.csv", "manifest.jsonl"]


def test_outputs_append_then_rewrite_whole(tmp_path):
    outputs = Outputs(str(tmp_path / "f.csv"), str(tmp_path / "f.jsonl"), FIELDS)
    outputs.rewrite(lambda: iter([]))
    outputs.append([row("a.jpg"), row("b.jpg")])
    assert [r["source"] for r in csv.DictReader(open(tmp_path / "f.csv"))] == ["a.jpg", "b.jpg"]
    outputs.rewrite(lambda: iter([row("b.jpg"), row("a.jpg")]))
    assert [r["source"] for r in csv.DictReader(open(tmp_path / "f.csv"))] == ["b.jpg", "a.jpg"]
    assert [json.loads(line)["source"] for line in open(tmp_path / "f.jsonl")] == ["b.jpg", "a.jpg"]
    assert not list(tmp_path.glob("*.tmp"))


def test_outputs_gather_each_video_tracks_probabilities_for_the_timeline(tmp_path):
    outputs = Outputs(None, None, FIELDS, tracks=True)
    video = [row("v.mp4", frame=f, track=t, p=0.1 * f) for f in range(3) for t in (0, 4)]
    outputs.rewrite(lambda: iter([row("a.jpg"), *video]))
    assert sorted(outputs.tracks) == [("v.mp4", 0), ("v.mp4", 4)]   # the photo's face is no track
    assert [t for t, _ in outputs.tracks[("v.mp4", 4)]] == pytest.approx([0.0, 1 / 15, 2 / 15])
    assert outputs.tracks[("v.mp4", 0)][2][1] == pytest.approx([0.2, 0.8])
    outputs.rewrite(lambda: iter(video[:2]))   # rewritten: gathered afresh, not added to
    assert [len(v) for v in outputs.tracks.values()] == [1, 1]


def test_progress_counts_frames_per_second_from_when_the_workers_are_ready(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("kefer.progress.time.monotonic", lambda: clock[0])
    progress = Progress(inputs=2, frames=100, quiet=True)
    clock[0] = 130.0   # 30 s of start-up: Ray and each worker's model
    progress.started()
    clock[0] = 140.0
    progress.frames(50)
    assert progress.warm_rate() == pytest.approx(5.0)
    assert progress.rate() == pytest.approx(50 / 40)


def test_progress_says_inputs_frames_per_second_eta_and_failures(caplog):
    with caplog.at_level(logging.INFO, logger="kefer"):
        progress = Progress(inputs=4, frames=100, log_every=0.0)   # no terminal here: log lines
        progress.frames(50)
        progress.inputs(done=2, failed=1)
        progress.close()
    line = caplog.records[-1].getMessage()
    assert line.startswith("inputs 3/4, 1 failed, 50 frames,") and "frames/s" in line and "ETA" in line


def test_ray_sizing_shares_cpus_and_gpus_out_by_fractions():
    from kefer.ray_engine import sizing

    assert sizing({"CPU": 2.0}, None, "cpu") == (2, {"num_cpus": 1.0}, 1)          # one actor per CPU
    assert sizing({"CPU": 2.0}, 1, "cpu") == (1, {"num_cpus": 1.0}, 2)             # one actor, both cores' threads
    n, need, threads = sizing({"CPU": 16.0, "GPU": 1.0}, 4, "cuda")
    assert (n, threads) == (4, 4) and need == {"num_cpus": 1.0, "num_gpus": 0.25}  # 4 actors share the GPU
    assert sizing({"CPU": 2.0}, 4, "cpu")[1] == {"num_cpus": 0.5}
    with pytest.raises(ValueError, match="no GPU"):
        sizing({"CPU": 8.0}, 2, "cuda")
