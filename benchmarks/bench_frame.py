"""Per-frame cost of the webcam pipeline on a real face in a 640x480 frame, model by model.

    python benchmarks/bench_frame.py [--models fast:torch accurate:onnx accurate-int8:auto]
                                     [--frames 90] [--detect-every 3] [--threads 1]

The frame is a real FER+ test face (48x48, upscaled to 240x240) pasted into a 640x480 grey frame.
For each MODEL:BACKEND, stages are timed on their own: detection (MTCNN on a 320x240 downscale),
alignment (eye-levelled crop), encoder (one face, incl. its preprocessing), drawing; end to end is
``StreamAnalyzer.update`` (what the app's webcam and ``kefer analyze`` run per frame), with MTCNN
every ``--detect-every`` frames and the boxes reused in between. The first model is the
reference: every other one's end-to-end median is printed as a ratio to it, all in one run.
Torch and ONNX Runtime use ``--threads`` CPU threads, 1 by default as in app.py.
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
from kefer.analysis import StreamAnalyzer  # noqa: E402
from kefer.faces import FaceDetector, class_colour, draw  # noqa: E402
from kefer.io import data_home  # noqa: E402


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


def bench(spec: str, frame: np.ndarray, args) -> float:
    """Print one MODEL:BACKEND's stage and end-to-end times; returns the end-to-end median (ms)."""
    name, _, backend = spec.partition(":")
    rec = kefer.load(name, device=args.device, backend=backend or "auto")
    detector = FaceDetector(device=args.device, crop_size=rec.input_size)
    faces = detector.detect(frame)
    if len(faces) != 1:
        sys.exit(f"expected one face in the benchmark frame, MTCNN found {len(faces)}")
    face = faces[0]
    face.crop = detector.align(frame, face)
    print(f"{rec.summary}")
    stages = {
        "detection (MTCNN @ 320x240)": lambda: detector.detect(frame),
        "alignment": lambda: detector.align(frame, face),
        "encoder (1 face)": lambda: rec.embed([face.crop]),
        "drawing": lambda: draw(frame, [face], ["happiness 0.93"], [class_colour(1)], 0),
    }
    for stage, fn in stages.items():
        print(f"  {stage:<30} {median_ms(fn, args.frames)[0]:7.2f} ms (median)")
    stream = StreamAnalyzer(rec, detector=detector, every=args.detect_every)
    med, times = median_ms(lambda: stream.update(frame), args.frames)
    print(f"  end to end, MTCNN every {args.detect_every} frame(s): {med:7.2f} ms median, "
          f"{statistics.mean(times):.2f} ms mean, {np.percentile(times, 90):.2f} ms p90")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fast:torch", "accurate:onnx", "accurate-int8"],
                        help="MODEL[:BACKEND] ... (a shipped name, run dir or file; backend auto, torch or "
                             "onnx); the first is the reference (default: the app's former torch fast path)")
    parser.add_argument("--data", default=str(data_home()))
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--detect-every", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (app.py's default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    frame = real_face_frame(Path(args.data))
    print(f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f}), torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.frames} frames of 640x480")
    medians = {spec: bench(spec, frame, args) for spec in args.models}
    reference = args.models[0]
    print(f"end-to-end median per frame, relative to {reference}:")
    for spec, med in medians.items():
        print(f"  {spec:<24} {med:7.2f} ms  ratio {med / medians[reference]:.2f}")


if __name__ == "__main__":
    main()
