"""``kefer analyze --engine ray`` on an embedded local Ray: the single-process rows, a killed worker's
video retried without a duplicate, --resume after the driver is killed (issue 28).

Every Ray run here goes inside a loopback-only network namespace (``unshare -n``, root): Ray binds
to the machine's own address otherwise, and these machines' traffic must stay on loopback. Three
short real-face clips and six photos, the ``fast`` model, two workers."""
from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from kefer.cli import main as cli

pytest.importorskip("ray", reason="--engine ray needs Ray: pip install -r requirements.txt (or -e '.[ray]')")

from test_analyze_collection import (assert_complete, done_videos, kefer_process, key, make_collection,  # noqa: E402
                                     rows_of, wait_for)

LOOPBACK = ["unshare", "-n", "bash", "-c", 'ip link set lo up; exec "$@"', "_"]
VIDEOS, IMAGES, FRAMES = 3, 6, 16


@pytest.fixture(scope="module")
def collection(tmp_path_factory, ckplus_root):
    """(the input folder, the single-process run's rows)."""
    if subprocess.run(LOOPBACK + ["true"], capture_output=True).returncode != 0:
        pytest.skip("Ray runs only inside a loopback-only network namespace here: `unshare -n` needs root")
    tmp = tmp_path_factory.mktemp("ray")
    make_collection(tmp / "in", ckplus_root, VIDEOS, IMAGES, FRAMES)
    assert cli(["analyze", str(tmp / "in"), "--csv", str(tmp / "local.csv"), "--model", "fast", "--quiet"]) == 0
    return tmp / "in", rows_of(tmp / "local.csv")


def ray_args(folder, out) -> list[str]:
    return [str(folder), "--csv", str(out), "--model", "fast", "--engine", "ray", "--workers", "2"]


def finish(process, timeout: float = 600) -> str:
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, output[-3000:]
    return output


def assert_same_rows(rows: list[dict], reference: list[dict]) -> None:
    """The same faces (source, frame, track), labels and boxes to 1 px as the single-process run."""
    assert_complete(rows, VIDEOS, IMAGES, FRAMES)
    assert sorted(map(key, rows)) == sorted(map(key, reference))
    mine = {key(r): r for r in rows}
    for ref in reference:
        r = mine[key(ref)]
        assert r["label"] == ref["label"], key(ref)
        assert max(abs(float(r[c]) - float(ref[c])) for c in ("x0", "y0", "x1", "y1")) <= 1.0, key(ref)


def video_in_progress(parts) -> int | None:
    """The pid of a worker writing a video's part right now (its temporary file's name holds it)."""
    for f in parts.glob("video-*.tmp") if parts.exists() else []:
        match = re.search(r"\.(\d+)\.\d+\.tmp$", f.name)
        if match:
            return int(match.group(1))
    return None


def test_ray_matches_the_single_process_rows_and_survives_a_killed_worker(collection, tmp_path):
    folder, reference = collection
    out = tmp_path / "ray.csv"
    process = kefer_process(ray_args(folder, out), LOOPBACK)
    killed = []

    def kill_a_busy_worker() -> bool:
        pid = video_in_progress(tmp_path / "ray.parts")
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)   # a Ray worker of this run, mid-video
                killed.append(pid)
            except ProcessLookupError:
                return False
        return bool(killed)

    wait_for(kill_a_busy_worker, process, what="a worker busy on a video")
    finish(process)
    assert_same_rows(rows_of(out), reference)


def test_resume_after_the_driver_is_killed_adds_each_missing_row_once(collection, tmp_path):
    folder, reference = collection
    out = tmp_path / "ray.csv"
    process = kefer_process(ray_args(folder, out), LOOPBACK)
    wait_for(lambda: done_videos(tmp_path / "ray.parts") >= 1, process, what="the first video")
    process.send_signal(signal.SIGKILL)
    process.communicate()
    before = rows_of(out)
    assert 0 < len(before) < len(reference)
    plot = tmp_path / "timeline.png"
    output = finish(kefer_process([*ray_args(folder, out), "--resume", "--plot", str(plot)], LOOPBACK))
    assert "inputs finished before" in output
    assert re.search(r"Ray: 2 worker\(s\) ready in", output)
    assert plot.stat().st_size > 10_000 and f"timeline: {plot}" in output   # drawn from the rows
    rows = rows_of(out)
    assert_same_rows(rows, reference)
    assert {key(r) for r in before} <= {key(r) for r in rows}
