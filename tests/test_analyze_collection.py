"""``kefer analyze`` on a collection, single process: part files, kill -9 and --resume, Parquet parts,
--device and --batch-size (issue 28). Real CK+ faces, upscaled, in short clips written here."""
from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from kefer.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("happiness", "surprise", "anger", "sadness", "neutral", "disgust")


def face(ckplus_root, cls: str, index: int = 0, side: int = 160) -> np.ndarray:
    path = sorted((ckplus_root / cls).glob("*.png"))[index]
    return cv2.resize(np.array(Image.open(path).convert("RGB")), (side, side), interpolation=cv2.INTER_CUBIC)


def make_collection(folder: Path, ckplus_root, videos: int = 3, images: int = 6, frames: int = 12) -> None:
    """``videos`` 320x240 MJPG clips of ``frames`` frames (a real face drifting right) and ``images``
    photos with one face each, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for v in range(videos):
        writer = cv2.VideoWriter(str(folder / f"clip{v}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 15, (320, 240))
        crop = face(ckplus_root, CLASSES[v % len(CLASSES)], side=140)
        for i in range(frames):
            frame = np.full((240, 320, 3), 110, np.uint8)
            frame[50:190, 40 + 4 * i:180 + 4 * i] = crop
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
    for k in range(images):
        canvas = np.full((240, 320, 3), 118, np.uint8)
        canvas[40:200, 80:240] = face(ckplus_root, CLASSES[k % len(CLASSES)], index=1)
        Image.fromarray(canvas).save(folder / f"photo{k}.png")


def rows_of(path) -> list[dict]:
    return list(csv.DictReader(open(path)))


def key(r: dict) -> tuple:
    return (os.path.basename(r["source"]), int(r["frame"]), int(r["track"]))


def assert_complete(rows: list[dict], videos: int, images: int, frames: int) -> None:
    """One row per frame of every clip and per photo (each has one face), none twice."""
    keys = [key(r) for r in rows]
    assert len(keys) == len(set(keys)), "a duplicate row"
    for v in range(videos):
        assert sorted(f for s, f, _ in keys if s == f"clip{v}.avi") == list(range(frames)), f"clip{v}.avi"
    assert sorted(s for s, _, _ in keys if s.startswith("photo")) == [f"photo{k}.png" for k in range(images)]


def kefer_process(args: list[str], wrap: list[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([*wrap, sys.executable, "-m", "kefer", "analyze", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"kefer analyze ended before {what}: {process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def done_videos(parts: Path) -> int:
    manifest = parts / "manifest.jsonl"
    if not manifest.exists():
        return 0
    return sum('"kind": "video"' in line and '"done"' in line for line in manifest.read_text().splitlines())


def test_kill_9_keeps_whole_rows_and_resume_adds_the_rest_once(ckplus_root, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "faces.csv"
    make_collection(folder, ckplus_root, videos=4, images=3, frames=15)
    process = kefer_process([str(folder), "--csv", str(out), "--model", "fast", "--batch-size", "2"])
    wait_for(lambda: done_videos(tmp_path / "faces.parts") >= 1, process, what="the first video")
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    killed = rows_of(out)   # whole rows of finished inputs only
    finished = [json.loads(line) for line in (tmp_path / "faces.parts" / "manifest.jsonl").read_text().splitlines()]
    assert len(killed) == sum(e["rows"] for e in finished if e["status"] == "done")
    assert all(None not in r.values() and r["reference"] == "none" for r in killed)
    assert cli(["analyze", str(folder), "--csv", str(out), "--model", "fast", "--resume", "--quiet"]) == 0
    rows = rows_of(out)
    assert_complete(rows, videos=4, images=3, frames=15)
    assert {key(r) for r in killed} <= {key(r) for r in rows}
    assert not (tmp_path / "faces.parts").exists()   # a complete run removes its parts


def test_resume_retries_failures_and_redoes_changed_inputs_only(ckplus_root, tmp_path, caplog):
    folder, out = tmp_path / "in", tmp_path / "faces.csv"
    make_collection(folder, ckplus_root, videos=1, images=2, frames=6)
    (folder / "late.png").write_bytes(b"not yet an image")
    args = ["analyze", str(folder), "--csv", str(out), "--json", str(tmp_path / "faces.jsonl"), "--model", "fast",
            "--format", "parquet", "--quiet"]
    pytest.importorskip("pyarrow", reason="Parquet parts need pyarrow (the ray extra installs it)")
    assert cli(args) == 1 and "late.png" in caplog.text
    assert (tmp_path / "faces.parts" / "manifest.jsonl").exists()   # kept: a failure to retry
    first = rows_of(out)
    Image.open(folder / "photo0.png").save(folder / "late.png")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kefer"):
        assert cli([*args, "--resume", "--device", "cpu"]) == 0
    assert "2 of 4 inputs finished before" not in caplog.text and "3 of 4 inputs finished before" in caplog.text
    rows = rows_of(out)
    assert [key(r) for r in rows] == [("late.png", 0, -1)] + [key(r) for r in first]   # input order
    assert len(open(tmp_path / "faces.jsonl").read().splitlines()) == len(rows)


def test_resume_needs_the_runs_outputs(tmp_path, ckplus_root):
    make_collection(tmp_path / "in", ckplus_root, videos=0, images=1)
    assert cli(["analyze", str(tmp_path / "in"), "--resume", "--quiet"]) == 2
    assert cli(["analyze", str(tmp_path / "in"), "--batch-size", "0", "--quiet"]) == 2
    assert cli(["analyze", str(tmp_path / "in"), "--threads", "0", "--quiet"]) == 2
    assert cli(["analyze", str(tmp_path / "in"), "--address", "auto", "--quiet"]) == 2   # needs --engine ray
