"""Video analysis throughput: ``kefer analyze`` on a 640x480 clip of real faces.

    python benchmarks/bench_video.py [--model accurate-int8] [--seconds 10] [--every 3] [--threads 2] [--batch-size 1 16]

The clip is written first (MJPG .avi at 30 frames/s): real CK+ faces (48x48 crops upscaled to
220x220), one at a time, drifting across a grey 640x480 frame, a new face every second. Then the
command line's own path runs on it (``kefer.cli.main(["analyze", clip, "--csv", ...])``: decoding,
detection every ``--every`` frames, tracking, smoothing, scoring, CSV rows) and the wall time
gives frames per second, once without and once with an annotated output video, for each
``--batch-size`` (video frames whose faces are embedded together).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kefer.cli import main as kefer_cli  # noqa: E402
from kefer.io import data_home  # noqa: E402


def write_clip(path: Path, ckplus: Path, seconds: int, fps: int = 30) -> int:
    """A clip of real faces [480, 640, 3] -> number of frames written."""
    faces = [p for c in ("happiness", "surprise", "sadness", "anger", "neutral") for p in sorted((ckplus / c).glob("*.png"))[:2]]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    n = seconds * fps
    for i in range(n):
        face = cv2.resize(np.array(Image.open(faces[(i // fps) % len(faces)]).convert("RGB")), (220, 220),
                          interpolation=cv2.INTER_CUBIC)
        frame = np.full((480, 640, 3), 110, np.uint8)
        x = 100 + 6 * (i % fps)
        frame[130:350, x:x + 220] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="accurate-int8")
    parser.add_argument("--data", default=str(data_home()))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2: this machine's cores)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16], help="kefer analyze --batch-size, each in turn")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.avi"
        n = write_clip(clip, Path(args.data) / "ckplus", args.seconds)
        print(f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f}), {args.threads} thread(s); "
              f"{n} frames of 640x480 at 30 frames/s; model {args.model}, detection every {args.every} frames")
        runs = [(batch, label, extra) for batch in args.batch_size
                for label, extra in (("rows only", []), ("rows + annotated video", ["--video", str(Path(tmp) / "out.mp4")]))]
        for batch, label, extra in runs:
            start = time.perf_counter()
            code = kefer_cli(["analyze", str(clip), "--model", args.model, "--every", str(args.every), "--quiet",
                              "--csv", str(Path(tmp) / "faces.csv"), "--batch-size", str(batch), *extra])
            seconds = time.perf_counter() - start
            if code != 0:
                sys.exit(f"kefer analyze failed with exit code {code}")
            print(f"  batch {batch:<3} {label:<24} {n / seconds:6.1f} frames/s ({seconds:.1f} s for {n} frames, "
                  f"model loading included)")


if __name__ == "__main__":
    main()
