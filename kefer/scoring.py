"""Scoring, the one place it is done: face representations against class anchors.

For representations f [N, d] and class anchors t [K, d]:
cosine cos(f, t_k) (Eq. 4), and probabilities softmax(logits) with logits = cos / tau (tau = 0.01,
as in training) for knowledge models, or the linear head's output for the classifier baseline.
``Prompts`` is the class side: names, templates and anchors, immutable, so many browser tabs or
callers can each hold their own without touching the shared model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.vocab import neutral_index
from .losses import TAU, similarity


@dataclass(frozen=True, eq=False)
class Prompts:
    """Classes, their templates and anchors [K, d] float32 (L2-normalised text embeddings).

    ``head``: the classifier baseline's (weight [K, d], bias [K]); its anchors are the weight rows
    and its prompts cannot be edited. ``trained``: the class names the model was trained on (a
    class outside them is zero-shot).
    """

    classes: tuple
    templates: tuple
    anchors: np.ndarray
    head: tuple | None = None
    trained: tuple = ()

    @property
    def template(self) -> str:
        return self.templates[0]

    @property
    def neutral_index(self) -> int | None:
        return neutral_index(self.classes)

    @property
    def is_classifier(self) -> bool:
        return self.head is not None


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """L2-normalise along the last axis (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def logits(f: torch.Tensor, anchors: torch.Tensor, head=None) -> torch.Tensor:
    """[N, d] -> [N, K]: cos(f, t_k) / tau, or ``head(f)`` for the classifier baseline."""
    return head(f) if head is not None else similarity(f, anchors) / TAU


def score(features: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
    """Representations [N, d] -> (cosines [N, K], probabilities [N, K]), both float32."""
    f = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).reshape(-1, prompts.anchors.shape[1])
    anchors = torch.from_numpy(prompts.anchors)
    head = None
    if prompts.head is not None:
        weight, bias = (torch.from_numpy(a) for a in prompts.head)
        head = lambda x: x @ weight.T + bias  # noqa: E731
    with torch.no_grad():
        cos = similarity(f, anchors)
        probs = logits(f, anchors, head).softmax(-1)
    return cos.numpy(), probs.numpy()
