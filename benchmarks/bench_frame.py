"""Per-frame cost of the app's webcam pipeline on a real face in a 640x480 frame.

    python benchmarks/bench_frame.py [--checkpoint PATH] [--frames 90] [--detect-every 3] [--threads 1]

The frame is a real FER+ test face (48x48, upscaled to 240x240) pasted into a 640x480 grey frame.
Stages, each timed on its own: detection (MTCNN on a 320x240 downscale), alignment (eye-levelled
crop), encoder (the recogniser's embedding of one face, incl. its preprocessing), drawing. End to
end is the app's own per-frame call, ``kefer.app.Session.process_frame`` (detection, tracking,
smoothing and scoring through ``kefer.analysis.StreamAnalyzer``, drawing, bars), with MTCNN every
``--detect-every`` frames and the boxes reused in between (also run with detection on every
frame, for comparison).
Torch uses ``--threads`` CPU threads, 1 by default as in app.py.
Prints median milliseconds per stage and end to end.
"""

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kefer  # noqa: E402
from kefer.app import App, Session  # noqa: E402
from kefer.faces import FaceDetector, class_colour, draw  # noqa: E402


def real_face_frame(data_root: Path) -> np.ndarray:
    """The first FER+ test image, upscaled to 240x240 and pasted into a 640x480 frame [480, 640, 3]."""
    split = data_root / "ferplus" / "FER2013Test"
    with open(split / "label.csv") as f:
        name = next(csv.reader(f))[0]
    face = np.array(Image.open(split / name).convert("RGB"))
    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[120:360, 200:440] = cv2.resize(face, (240, 240), interpolation=cv2.INTER_CUBIC)
    return frame


def median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    """Run fn ``repeats`` times after 3 warm-up calls -> (median ms, all times in ms)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="fast",
                        help="a .safetensors file, run dir or assets name (default: fast, the app's webcam model)")
    parser.add_argument("--data", default=os.environ.get("KEFER_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--detect-every", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (app.py's default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rec = kefer.load(args.checkpoint, device=args.device)
    frame = real_face_frame(Path(args.data))
    detector = FaceDetector(device=args.device, crop_size=rec.input_size)

    faces = detector.detect(frame)
    if len(faces) != 1:
        sys.exit(f"expected one face in the benchmark frame, MTCNN found {len(faces)}")
    face = faces[0]
    face.crop = detector.align(frame, face)

    stages = {
        "detection (MTCNN @ 320x240)": lambda: detector.detect(frame),
        "alignment": lambda: detector.align(frame, face),
        "encoder (1 face)": lambda: rec.embed([face.crop]),
        "drawing": lambda: draw(frame, [face], ["happiness 0.93"], [class_colour(1)], 0),
    }
    print(f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f}), torch {torch.__version__} "
          f"with {torch.get_num_threads()} thread(s), model input {rec.input_size}px, {args.frames} frames of 640x480")
    for name, fn in stages.items():
        print(f"  {name:<30} {median_ms(fn, args.frames)[0]:7.2f} ms (median)")

    for every in sorted({args.detect_every, 1}, reverse=True):
        session = Session(App(rec, device=args.device, detect_every=every))
        med, times = median_ms(lambda: session.process_frame(frame), args.frames)
        print(f"  end to end, MTCNN every {every} frame(s): {med:7.1f} ms median, "
              f"{statistics.mean(times):.1f} ms mean, {np.percentile(times, 90):.1f} ms p90")


if __name__ == "__main__":
    main()
