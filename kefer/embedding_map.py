"""Reference maps: labelled reference faces of one model laid out once in 2-D, and new faces placed
among them.

    ref = find_map(rec)                  # the map built for this model (assets/maps/*.npz), or None
    xy = ref.place(rec.embed(faces))     # [M, 2]: where these faces sit among the reference faces

A map is built once by ``kefer lab map`` (t-SNE of the reference faces' representations); a new
face is placed at the weighted mean of the 2-D points of its ``NEIGHBOURS`` most cosine-similar
reference faces, weights softmax(cos / s): one matrix product, no new t-SNE. s is the map's own
(``sharpness``): ``SHARPNESS`` times its faces' median cosine distance to their nearest other face,
so that a face equal to a reference face lands on its point whether a model's representations are
spread (accurate: 0.046) or packed (fast: 0.0012). A map names the models it fits by
``fingerprint``, so a user's own model never borrows another's map.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .recognizer import ASSETS
from .scoring import l2_normalise

log = logging.getLogger(__name__)

MAPS = ASSETS / "maps"
NEIGHBOURS = 10     # reference faces a new face is placed by
SHARPNESS = 0.05    # softmax temperature over their cosines, in units of the map's nearest-neighbour distance
IDENTITY = ("encoder", "encoder_kwargs", "img_size", "classes", "text_encoder", "config", "epoch", "val_accuracy",
            "quantization")   # checkpoint metadata that names one trained network (not its operating point)


def fingerprint(meta: dict) -> str:
    """A checkpoint's metadata -> 16 hex digits naming its trained network (an int8 copy differs)."""
    identity = {k: meta.get(k) for k in IDENTITY}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class ReferenceMap:
    """Reference faces of known expressions in 2-D, for the models named in ``models`` (hashed by
    identity: one loaded map, one cached background picture in the app).

    points [N, 2] float32 (the t-SNE), labels [N] int (index into ``classes``), embeddings [N, d]
    (L2-normalised; stored float16), models {fingerprint: model name}, source (one line: which faces,
    which layout), sharpness (``sharpness``)."""

    points: np.ndarray
    labels: np.ndarray
    classes: tuple
    embeddings: np.ndarray
    models: dict
    source: str
    sharpness: float

    def fits(self, meta: dict) -> bool:
        return fingerprint(meta) in self.models

    def place(self, embeddings: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
        """Faces [M, d] -> their places [M, 2]: the softmax(cos / sharpness)-weighted mean of the points
        of their ``neighbours`` most similar reference faces."""
        faces = l2_normalise(np.asarray(embeddings, np.float32).reshape(-1, self.embeddings.shape[1]))
        if not len(faces):
            return np.zeros((0, 2), np.float32)
        cos = faces @ self.embeddings.T                                   # [M, N]
        k = min(neighbours, cos.shape[1])
        near = np.argpartition(-cos, k - 1, axis=1)[:, :k]                # [M, k]
        near_cos = np.take_along_axis(cos, near, axis=1)
        weights = np.exp((near_cos - near_cos.max(axis=1, keepdims=True)) / self.sharpness)
        weights /= weights.sum(axis=1, keepdims=True)
        return np.einsum("mk,mkc->mc", weights, self.points[near]).astype(np.float32)

    def save(self, path: str | Path) -> None:
        """One compressed .npz (embeddings as float16): coordinates and representations, no images."""
        np.savez_compressed(path, points=self.points.astype(np.float32), labels=self.labels.astype(np.int16),
                            classes=np.array(self.classes), embeddings=self.embeddings.astype(np.float16),
                            models=np.array(json.dumps(self.models)), source=np.array(self.source),
                            sharpness=np.array(self.sharpness))

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceMap":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["points"].astype(np.float32), f["labels"].astype(np.int64), tuple(f["classes"].tolist()),
                       l2_normalise(f["embeddings"].astype(np.float32)), json.loads(str(f["models"])),
                       str(f["source"]), float(f["sharpness"]))


def sharpness(embeddings: np.ndarray) -> float:
    """Reference faces [N, d] (L2-normalised) -> their placement temperature: ``SHARPNESS`` times the
    median cosine distance of a face to its nearest other face."""
    cos = embeddings @ embeddings.T
    np.fill_diagonal(cos, -np.inf)
    return SHARPNESS * float(np.median(1.0 - cos.max(axis=1)))


def find_map(recognizer, folder: str | Path = MAPS) -> ReferenceMap | None:
    """The reference map in ``folder`` that names this recogniser's network, or None (e.g. a user's
    own model: no map was built for it)."""
    if recognizer is None:
        return None
    wanted = fingerprint(recognizer.meta)
    for path in sorted(Path(folder).glob("*.npz")):
        with np.load(path, allow_pickle=False) as f:
            models = json.loads(str(f["models"]))
        if wanted in models:
            log.info("reference map for %s: %s", recognizer.name, path.name)
            return ReferenceMap.load(path)
    log.info("no reference map for %s in %s", recognizer.name, folder)
    return None
