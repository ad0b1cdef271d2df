"""What the app's face pipeline does to accuracy: a labelled set of face crops put back into a
frame, found by MTCNN, eye-levelled and cropped at several crop scales (``faces.FaceDetector``, as
the webcam and photo paths do), against the dataset's own crops. Per-class accuracy for each.

    kefer lab robustness accurate-int8 --dataset ckplus \\
        --classes neutral,happiness,surprise,sadness,anger,disgust,fear --crop-scales 0.9 1.0 1.2 \\
        --output ckplus-framing.json --plot ckplus-framing.png

Each 48-px crop is upscaled ``UPSCALE`` times and padded with a grey border to a frame twice its
size, so MTCNN sees a face of about 190 px in a frame, as a camera would show it. MTCNN runs once per
image; only the crop changes with the scale. Where it finds no face, the frame's centre is scored
instead and the miss is counted.
"""
from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np
from tqdm import tqdm

from ..train.data import build_dataset
from ..faces import FaceDetector
from ..io import log_to_console
from ..train.metrics import classification_metrics
from ..recognizer import load
from ..viz import plot_study


UPSCALE = 4
BORDER = 128   # grey of the padding around the face


def as_frame(image) -> np.ndarray:
    """A PIL face crop -> [H, W, 3] uint8 RGB frame: upscaled ``UPSCALE`` times, padded to twice that."""
    rgb = np.asarray(image.convert("RGB"))
    side = rgb.shape[0] * UPSCALE
    face = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    pad = side // 2
    return cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(BORDER,) * 3)


def accuracy_of(rec, crops: list[np.ndarray], labels: np.ndarray, classes: list[str]) -> dict:
    """Metrics of ``rec`` on face crops [S, S, 3] with labels [N] (indices into ``classes``),
    predictions restricted to ``classes``."""
    probs = rec.predict(crops)
    idx = [rec.classes.index(c) for c in classes]
    return classification_metrics(labels, probs[:, idx].argmax(1), classes)


def framing_study(rec, dataset: str, data_root, classes, crop_scales: list[float], split: str = "test") -> dict:
    """{"dataset crops": metrics, "mtcnn x<scale>": metrics with "missed" (faces not found), ...}."""
    data = build_dataset(dataset, data_root, split, None, classes=classes)
    missing = [c for c in data.classes if c not in rec.classes]
    if missing:
        raise ValueError(f"The model has no class(es) {missing} of {dataset}; it knows {rec.classes}.")
    detector = FaceDetector(crop_size=rec.input_size, detect_side=10_000, min_face_size=40)
    labels = np.array(data.targets)
    originals, frames, found = [], [], []
    for i in tqdm(range(len(data)), desc="MTCNN", mininterval=2):
        image = data.image(i)
        originals.append(cv2.resize(np.asarray(image.convert("RGB")), (rec.input_size,) * 2,
                                    interpolation=cv2.INTER_CUBIC))
        frames.append(as_frame(image))
        faces = detector.detect(frames[-1])
        found.append(faces[0] if faces else None)
    out = {"dataset crops": accuracy_of(rec, originals, labels, data.classes)}
    centre = [cv2.resize(f[f.shape[0] // 4: -f.shape[0] // 4, f.shape[1] // 4: -f.shape[1] // 4],
                         (rec.input_size,) * 2, interpolation=cv2.INTER_AREA) for f in frames]
    for s in crop_scales:
        detector.crop_scale = s
        crops = [detector.align(frame, face) if face is not None else centre[i]
                 for i, (frame, face) in enumerate(zip(frames, found))]
        m = accuracy_of(rec, crops, labels, data.classes)
        out[f"mtcnn x{s:g}"] = {**m, "missed": sum(f is None for f in found)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer lab robustness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a shipped model name, a .safetensors/.onnx file or a run directory")
    p.add_argument("--dataset", default="ckplus")
    p.add_argument("--data-root")
    p.add_argument("--split", default="test")
    p.add_argument("--classes", help="comma-separated classes to keep (default: the dataset's own)")
    p.add_argument("--crop-scales", type=float, nargs="+", default=[0.9, 1.0, 1.1, 1.25, 1.4])
    p.add_argument("--no-balance", action="store_true", help="raw scores, not the model's stored balance")
    p.add_argument("--output", help="write the metrics as JSON")
    p.add_argument("--plot", help="write per-class bars as PNG")
    args = p.parse_args(argv)
    log_to_console()
    try:
        rec = load(args.model, balanced=not args.no_balance)
        classes = args.classes.split(",") if args.classes else None
        study = framing_study(rec, args.dataset, args.data_root, classes, args.crop_scales, args.split)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = list(next(iter(study.values()))["per_class_accuracy"])
    print(f"{'framing':16s} {'overall':>8s} {'mean':>6s} " + " ".join(f"{c[:8]:>8s}" for c in names))
    for name, m in study.items():
        print(f"{name:16s} {100 * m['accuracy']:8.2f} {100 * m['mean_accuracy']:6.2f} "
              + " ".join(f"{100 * (m['per_class_accuracy'][c] or 0):8.1f}" for c in names)
              + (f"   (no face found: {m['missed']})" if "missed" in m else ""))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"model": args.model, "dataset": args.dataset, "split": args.split,
                       "summary": rec.summary, "framings": study}, f, indent=1)
    if args.plot:
        plot_study(study, names, f"{rec.name} on {args.dataset}/{args.split}: dataset crops vs MTCNN framing",
                   args.plot)
    return 0

