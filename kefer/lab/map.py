"""A model's reference map for the app: FER+ validation faces of known expressions, laid out once.

    kefer lab map accurate --output assets/maps/accurate.npz --also accurate-int8
    kefer lab map fast --output assets/maps/fast.npz

Takes up to ``--faces`` FER+ validation faces (seeded): all of each rare class and the same
number of each other class, embeds them with the model as loaded (``Recognizer.embed``), computes one t-SNE
(cosine) of them and stores the 2-D points, labels, class names and the L2-normalised embeddings
(float16) as a ``kefer.embedding_map.ReferenceMap``: coordinates and representations, no images.
The app then places new faces on it (``ReferenceMap.place``). ``--also MODEL``: another model (e.g.
the int8 copy) shares the map if its representations of the same faces have a mean cosine of at
least ``--min-cos`` to the model's; it is measured and logged either way. ``--output-json`` keeps
the measurements: placement error of held-out reference faces (10 folds) and of each face's own
embedding, as fractions of the map's RMS radius.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..embedding_map import ReferenceMap, fingerprint, sharpness
from ..recognizer import load
from ..train.data import build_dataset
from ..viz import embed_2d

log = logging.getLogger(__name__)

FACES = 1000     # reference faces kept (class-balanced where the classes allow)
FOLDS = 10       # held-out placement check
BATCH = 128


def stratified(labels: np.ndarray, classes: int, total: int, seed: int) -> np.ndarray:
    """Indices of up to ``total`` faces, seeded, sorted: all of each rare class, and the same number
    (as many as the rest allows) of each other class."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=classes)
    cap = 0
    while cap < counts.max() and np.minimum(counts, cap + 1).sum() <= total:
        cap += 1
    keep = [rng.permutation(np.flatnonzero(labels == k))[:cap] for k in range(classes)]
    return np.sort(np.concatenate(keep))


def embed(rec, data, indices: np.ndarray) -> np.ndarray:
    """The faces ``indices`` of ``data`` (items: (transformed image, label)) -> embeddings [n, d]."""
    out = []
    for start in range(0, len(indices), BATCH):
        x = torch.stack([data[int(i)][0] for i in indices[start:start + BATCH]])
        out.append(rec.embed(x))
    return np.concatenate(out)


def radius(points: np.ndarray) -> float:
    """RMS distance of points [N, 2] from their mean: the map's scale."""
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean()))


def held_out_error(ref: ReferenceMap, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each reference face placed by a map of the other folds' faces -> its distance [N] from its own point."""
    fold = np.random.default_rng(seed).permutation(len(ref.points)) % folds
    error = np.zeros(len(ref.points), np.float32)
    for f in range(folds):
        rest = fold != f
        part = ReferenceMap(ref.points[rest], ref.labels[rest], ref.classes, ref.embeddings[rest], ref.models, ref.source,
                            ref.sharpness)
        error[~rest] = np.linalg.norm(part.place(ref.embeddings[~rest]) - ref.points[~rest], axis=1)
    return error


def summary(errors: np.ndarray, scale: float) -> dict:
    return {"median": round(float(np.median(errors)) / scale, 4), "p90": round(float(np.percentile(errors, 90)) / scale, 4)}


def build(model: str, also: list[str], faces: int, seed: int, min_cos: float, data_root=None) -> tuple:
    """-> (ReferenceMap, measurements dict)."""
    rec = load(model)
    data = build_dataset("ferplus", data_root, "val", rec.transform, classes=list(rec.classes))
    labels = np.array(data.targets)
    keep = stratified(labels, len(rec.classes), faces, seed)
    start = time.perf_counter()
    emb = embed(rec, data, keep)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    xy, _ = embed_2d(emb, seed=seed, min_tsne=0)
    tsne_s = time.perf_counter() - start
    counts = np.bincount(labels[keep], minlength=len(rec.classes))
    source = (f"FER+ validation, {len(keep)} faces ({', '.join(f'{c} {n}' for c, n in zip(rec.classes, counts))}), "
              f"t-SNE (cosine) of {rec.name}'s representations, seed {seed}")
    models = {fingerprint(rec.meta): rec.name}
    ref = ReferenceMap(xy.astype(np.float32), labels[keep], tuple(rec.classes), emb, models, source, sharpness(emb))
    stored = ReferenceMap.load(save_to_memory(ref))     # measured as the app will read it (float16)
    scale = radius(stored.points)
    result = {"model": rec.name, "faces": len(keep), "sharpness": round(stored.sharpness, 6), "per_class": dict(zip(rec.classes, counts.tolist())),
              "embed_seconds": round(embed_s, 1), "tsne_seconds": round(tsne_s, 1),
              "own_error": summary(np.linalg.norm(stored.place(emb) - stored.points, axis=1), scale),
              "held_out_error": summary(held_out_error(stored), scale), "also": {}}
    for other_name in also:
        other = load(other_name)
        other_emb = embed(other, data, keep)
        cos = (other_emb * emb).sum(axis=1)
        moved = np.linalg.norm(stored.place(other_emb) - stored.points, axis=1)
        shares = bool(cos.mean() >= min_cos) and other.classes == rec.classes
        result["also"][other.name] = {"mean_cos": round(float(cos.mean()), 4), "min_cos": round(float(cos.min()), 4),
                                      "placement_error": summary(moved, scale), "shares_map": shares}
        if shares:
            models[fingerprint(other.meta)] = other.name
    return ref, result   # ref.models now names the models that share it


def save_to_memory(ref: ReferenceMap) -> io.BytesIO:
    buffer = io.BytesIO()
    ref.save(buffer)
    buffer.seek(0)
    return buffer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kefer lab map", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors or .onnx checkpoint, a run directory, or an assets/ model name")
    p.add_argument("--output", required=True, help="the map (.npz), e.g. assets/maps/accurate.npz")
    p.add_argument("--also", action="append", default=[], help="another model that may share the map (repeatable)")
    p.add_argument("--faces", type=int, default=FACES, help=f"reference faces (default {FACES})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-cos", type=float, default=0.95,
                   help="mean cosine an --also model's representations need to share the map (default 0.95)")
    p.add_argument("--ferplus-root", help="FER+ root (default: $KEFER_DATA/ferplus or ../shared/data/ferplus)")
    p.add_argument("--output-json", help="write the measurements as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        ref, result = build(args.checkpoint, args.also, args.faces, args.seed, args.min_cos, args.ferplus_root)
    except (FileNotFoundError, ValueError, ImportError) as e:
        log.error("error: %s", e)
        return 2
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    ref.save(args.output)
    result["bytes"] = Path(args.output).stat().st_size
    log.info("%s: %s\n%s", args.output, ref.source, json.dumps(result, indent=2))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
