"""A person's reference: their measured neutral face, and how it changes a face's scores.

    ref = rec.reference(neutral_crops)           # Reference: f_n [d], spread, count
    probs = rec.predict(faces, reference=ref)    # absolute and relative evidence combined
    ref.save("me.npz"); ref = Reference.load("me.npz")

The relative evidence is the paper's emotional-to-neutral relation with its learnt neutral G(f)
replaced by the person's measured one: for an expression k, r_k is the length of the face's move
from f_n along t_k - t_neutral; for neutral, s = cos(f, f_n). ``scoring.score`` adds them to the model's own log-probabilities with the
weights of a ``ReferenceRule``, chosen on CK+ by subject-independent folds
(docs/results/reference-rule.md) and stored with the model like its operating point.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .scoring import l2_normalise


@dataclass(frozen=True, eq=False)
class Reference:
    """One person's neutral face: ``embedding`` f_n [d], the renormalised mean of their neutral
    crops' L2-normalised embeddings; ``spread``, the mean cosine of those crops to f_n (1: all
    alike); ``count``, how many crops; ``source``: "recorded" (given) or "estimated" (from a track)."""

    embedding: np.ndarray
    spread: float
    count: int
    source: str = "recorded"

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, source: str = "recorded") -> "Reference":
        """[N, d] embeddings of one person's neutral face (N >= 1) -> their reference."""
        f = l2_normalise(np.asarray(embeddings, np.float32).reshape(-1, np.shape(embeddings)[-1]))
        if not len(f):
            raise ValueError("A reference needs at least one neutral face; none was given (or none was found).")
        mean = l2_normalise(f.mean(axis=0))
        return cls(mean, float(np.mean(f @ mean)), len(f), source)

    def save(self, path: str | Path) -> None:
        """Write it as a .npz file (embedding, spread, count, source)."""
        np.savez(path, embedding=self.embedding, spread=self.spread, count=self.count, source=self.source)

    @classmethod
    def load(cls, path: str | Path) -> "Reference":
        with np.load(path) as z:
            return cls(z["embedding"].astype(np.float32), float(z["spread"]), int(z["count"]), str(z["source"]))


@dataclass(frozen=True)
class ReferenceRule:
    """How much each kind of evidence counts: ``alpha`` for the expressions' r_k, ``beta`` for
    neutral's s - ``cutoff`` (both over ``scoring.TAU_RELATIVE``); alpha = beta = 0 is plain scoring."""

    alpha: float
    beta: float
    cutoff: float

    @classmethod
    def from_meta(cls, stored: dict | None) -> "ReferenceRule | None":
        return None if not stored else cls(float(stored["alpha"]), float(stored["beta"]), float(stored["cutoff"]))
