"""Per-frame cost of the webcam pipeline on a real face in a 640x480 frame, model by model, without
a reference, with a recorded one and with the per-track estimate.

    python benchmarks/bench_frame.py [--models fast:torch accurate:onnx accurate-int8:auto]
                                     [--frames 90] [--rounds 5] [--detect-every 3] [--threads 1]

The frame is the first FER+ test face whose annotators' majority vote is neutral (48x48, upscaled
to 240x240) pasted into a 640x480 grey frame: a face plain scoring calls neutral, so that the
per-track estimate is in use. For each MODEL:BACKEND, stages are timed on their own: detection
(MTCNN on a 320x240 downscale), alignment (eye-levelled crop), encoder (one face, incl. its
preprocessing), drawing, scoring one face without and with a reference, and the estimate's update
with as many frames as it keeps. End to end is ``StreamAnalyzer.update`` (what the app's webcam and
``kefer analyze`` run per frame), with MTCNN every ``--detect-every`` frames and the boxes reused in
between, in three modes on the same frame: no reference; a recorded reference (the face's own
embedding); the per-track estimate (``estimate=True``, primed with as many frames as the estimate
keeps, so that each frame averages the most). Each round times ``--frames`` frames, the three modes
in turn frame by frame (so that other jobs' load falls on each alike); the figures are the median
over rounds of each round's median, the rounds' range, each mode's ratio to no reference, and the
paired extra: the median over frames of a mode's time minus no reference's on the same frame. The first model is also the reference of a ratio across
models. Torch and ONNX Runtime use ``--threads`` CPU threads, 1 by default as in app.py.
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
from kefer.analysis import NeutralEstimates, StreamAnalyzer, score_faces  # noqa: E402
from kefer.faces import FaceDetector, class_colour, draw  # noqa: E402
from kefer.io import data_home  # noqa: E402
from kefer.reference import Reference  # noqa: E402

MODES = ("none", "recorded", "estimated")


def real_face_frame(data_root: Path) -> np.ndarray:
    """The first FER+ test image with a neutral majority vote, upscaled to 240x240 and pasted into
    a 640x480 frame [480, 640, 3]."""
    split = data_root / "ferplus" / "FER2013Test"
    with open(split / "label.csv") as f:
        name = next(row[0] for row in csv.reader(f) if int(np.argmax([int(v) for v in row[2:]])) == 0)
    face = np.array(Image.open(split / name).convert("RGB"))
    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[120:360, 200:440] = cv2.resize(face, (240, 240), interpolation=cv2.INTER_CUBIC)
    return frame


def times_ms(fn, repeats: int, warmup: int = 3) -> list[float]:
    """Run fn ``warmup`` times, then ``repeats`` times timed -> the timed calls in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def streams(rec, detector, frame, recorded, args) -> dict:
    """One StreamAnalyzer per mode (``recorded``: the recorded mode's reference), each primed with
    ``NeutralEstimates().keep`` frames; exits if the estimate is not in use after them."""
    out = {"none": StreamAnalyzer(rec, detector=detector, every=args.detect_every),
           "recorded": StreamAnalyzer(rec, detector=detector, every=args.detect_every, reference=recorded),
           "estimated": StreamAnalyzer(rec, detector=detector, every=args.detect_every, estimate=True)}
    for stream in out.values():
        for _ in range(NeutralEstimates().keep):
            stream.update(frame)
    used = out["estimated"].update(frame)[0].reference
    if used != "estimated":
        sys.exit(f"{rec.name}: the estimate is not in use on the benchmark frame (reference: {used})")
    return out


def bench(spec: str, frame: np.ndarray, args) -> dict:
    """Print one MODEL:BACKEND's stage times and each mode's end-to-end times -> {mode: median ms}."""
    name, _, backend = spec.partition(":")
    rec = kefer.load(name, device=args.device, backend=backend or "auto")
    detector = FaceDetector(device=args.device, crop_size=rec.input_size)
    faces = detector.detect(frame)
    if len(faces) != 1:
        sys.exit(f"expected one face in the benchmark frame, MTCNN found {len(faces)}")
    face = faces[0]
    face.crop = detector.align(frame, face)
    print(f"{rec.summary}")
    features = rec.embed([face.crop], normalise=False)
    recorded = Reference.from_embeddings(features)
    estimates = NeutralEstimates()
    for _ in range(estimates.keep):
        estimates.update([0], recorded.embedding[None], np.array([True]))
    stages = {
        "detection (MTCNN @ 320x240)": lambda: detector.detect(frame),
        "alignment": lambda: detector.align(frame, face),
        "encoder (1 face)": lambda: rec.embed([face.crop]),
        "drawing": lambda: draw(frame, [face], ["happiness 0.93"], [class_colour(1)], 0),
        "scoring, no reference": lambda: score_faces(rec, [face], features, None),
        "scoring, a reference": lambda: score_faces(rec, [face], features, None, reference=recorded),
        f"estimate update ({estimates.keep} kept)": lambda: estimates.update([0], recorded.embedding[None],
                                                                            np.array([True])),
    }
    for stage, fn in stages.items():
        print(f"  {stage:<30} {statistics.median(times_ms(fn, args.frames)):7.2f} ms (median)")
    modes = streams(rec, detector, frame, recorded, args)
    rounds = {mode: [] for mode in MODES}
    pooled = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        times = {mode: [] for mode in MODES}
        for _ in range(args.frames):          # frame by frame, the modes in turn: the same load for each
            for mode, stream in modes.items():
                times[mode].extend(times_ms(lambda: stream.update(frame), 1, warmup=0))
        for mode in MODES:
            rounds[mode].append(statistics.median(times[mode]))
            pooled[mode].extend(times[mode])
    medians = {mode: statistics.median(r) for mode, r in rounds.items()}
    print(f"  end to end, MTCNN every {args.detect_every} frame(s), {args.rounds} rounds of {args.frames} frames:")
    for mode in MODES:
        extra = np.subtract(pooled[mode], pooled["none"])    # paired: the same frame index and moment
        print(f"    {mode:<10} {medians[mode]:7.2f} ms median (rounds {min(rounds[mode]):.2f}-{max(rounds[mode]):.2f}), "
              f"{statistics.mean(pooled[mode]):.2f} ms mean, {np.percentile(pooled[mode], 90):.2f} ms p90, "
              f"ratio to none {medians[mode] / medians['none']:.3f}; paired extra {np.median(extra):+.2f} ms "
              f"(ratio {1 + np.median(extra) / medians['none']:.3f})")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fast:torch", "accurate:onnx", "accurate-int8"],
                        help="MODEL[:BACKEND] ... (a shipped name, run dir or file; backend auto, torch or "
                             "onnx); the first is the reference (default: the app's former torch fast path)")
    parser.add_argument("--data", default=str(data_home()))
    parser.add_argument("--frames", type=int, default=90, help="timed frames per mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--detect-every", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (app.py's default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    frame = real_face_frame(Path(args.data))
    print(f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f}), torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.frames} frames of 640x480 per mode and round")
    medians = {spec: bench(spec, frame, args) for spec in args.models}
    reference = args.models[0]
    print(f"end-to-end median per frame without a reference, relative to {reference}:")
    for spec, med in medians.items():
        print(f"  {spec:<24} {med['none']:7.2f} ms  ratio {med['none'] / medians[reference]['none']:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
