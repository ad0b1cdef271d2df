"""Scoring, the one place it is done: face representations against class anchors.

For representations f [N, d] and class anchors t [K, d]:
cosine cos(f, t_k) (Eq. 4), and probabilities softmax(logits + offsets) with logits = cos / tau
(tau = 0.01, as in training) for knowledge models, or the linear head's output for the classifier
baseline; ``offsets`` [K] are the model's operating point (``kefer.operating``: balancing rare
classes), zero by default. ``Prompts`` is the class side: names, templates, anchors and the
operating point, immutable, so many browser tabs or callers can each hold their own without
touching the shared model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .vocab import neutral_index

TAU_RELATIVE = 0.1   # the temperature of a reference's relative evidence (docs/results/reference-rule.md)
TAU = 0.01   # the temperature of softmax(cos / tau), as in training (METHOD.md, Eq. 5)


@dataclass(frozen=True, eq=False)
class Prompts:
    """Classes, their templates and anchors [K, d] float32 (L2-normalised text embeddings).

    ``head``: the classifier baseline's (weight [K, d], bias [K]); its anchors are the weight rows
    and its prompts cannot be edited. ``trained``: the class names the model was trained on (a
    class outside them is zero-shot). The operating point (``kefer.operating.OperatingPoint.apply``):
    ``offsets`` [K] float32 added to the logits (None: none), made with balance ``strength``;
    ``abstain_margin``: a face whose top-1 minus top-2 probability is below it is "uncertain"
    (None: always answer); ``reference_rule``: how a person's reference changes the scores
    (``reference.ReferenceRule``; None: the model stores none); ``temperature`` T: the probabilities
    are tempered, softmax(log p / T), so that they are calibrated (the argmax does not change).
    """

    classes: tuple
    templates: tuple
    anchors: np.ndarray
    head: tuple | None = None
    trained: tuple = ()
    offsets: np.ndarray | None = None
    strength: float = 0.0
    abstain_margin: float | None = None
    reference_rule: object | None = None
    temperature: float = 1.0

    @property
    def template(self) -> str:
        return self.templates[0]

    @property
    def neutral_index(self) -> int | None:
        return neutral_index(self.classes)

    @property
    def is_classifier(self) -> bool:
        return self.head is not None

    @property
    def zero_shot(self) -> tuple:
        """The class names outside ``trained`` (none when ``trained`` is empty: unknown)."""
        return tuple(c for c in self.classes if self.trained and c not in self.trained)


def similarity(f: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Eq. 4: cosine similarities [B, K] of f [B, d] to text [K, d]."""
    return F.normalize(f, dim=-1) @ F.normalize(text, dim=-1).T


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """L2-normalise along the last axis (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def logits(f: torch.Tensor, anchors: torch.Tensor, head=None) -> torch.Tensor:
    """[N, d] -> [N, K]: cos(f, t_k) / tau, or ``head(f)`` for the classifier baseline."""
    return head(f) if head is not None else similarity(f, anchors) / TAU


def score(features: np.ndarray, prompts: Prompts, reference=None) -> tuple[np.ndarray, np.ndarray]:
    """Representations [N, d] -> (cosines [N, K], probabilities [N, K] = softmax(logits + offsets)),
    both float32. With a person's ``reference`` (``reference.Reference``) the probabilities also
    weigh the face's direction from that person's neutral face (``combine``, by the model's stored
    ``prompts.reference_rule``); the cosines stay the absolute ones.

    Raises ValueError for a reference where the model stores no rule or the classes lack neutral.
    """
    f = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).reshape(-1, prompts.anchors.shape[1])
    anchors = torch.from_numpy(prompts.anchors)
    head = None
    if prompts.head is not None:
        weight, bias = (torch.from_numpy(a) for a in prompts.head)
        head = lambda x: x @ weight.T + bias  # noqa: E731
    with torch.no_grad():
        cos = similarity(f, anchors)
        z = logits(f, anchors, head)
        if prompts.offsets is not None:
            z = z + torch.from_numpy(np.asarray(prompts.offsets, np.float32))
        probs = z.softmax(-1)
    cos, probs = cos.numpy(), probs.numpy()
    if reference is not None:
        neutral = prompts.neutral_index
        if prompts.reference_rule is None or neutral is None:
            raise ValueError("This model stores no reference rule (or its classes have no neutral): choose one on CK+ "
                             "with `kefer lab reference MODEL --write`, or score without a reference.")
        probs = combine(probs, relative_evidence(features, reference, prompts.anchors, neutral), neutral,
                        prompts.reference_rule)
    return cos, temper(probs, prompts.temperature)


def relative_evidence(embeddings: np.ndarray, reference, anchors: np.ndarray, neutral: int) -> np.ndarray:
    """embeddings [N, d], anchors [K, d] -> [N, K]: for k != neutral, r_k = (f - f_n) . (t_k - t_neutral)
    / |t_k - t_neutral|, how far the face moved from the person's neutral along expression k's text
    direction (0 for a face at its neutral); s = cos(f, f_n) in the neutral column."""
    f = l2_normalise(embeddings)
    rel = (f - reference.embedding) @ l2_normalise(anchors - anchors[neutral]).T
    rel[:, neutral] = f @ reference.embedding
    return rel


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities [N, K] -> softmax(log p / T) [N, K]; T = 1 returns them unchanged."""
    if temperature == 1.0:
        return probs
    z = np.log(np.maximum(np.asarray(probs, np.float64), 1e-300)) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def combine(probs: np.ndarray, relative: np.ndarray, neutral: int, rule) -> np.ndarray:
    """Absolute probabilities [N, K] and relative evidence [N, K] -> probabilities [N, K]:
    softmax(log p + alpha r / tau) over the expressions, log p + beta (s - cutoff) / tau for neutral."""
    boost = rule.alpha * np.asarray(relative, np.float32) / TAU_RELATIVE
    boost[:, neutral] = rule.beta * (relative[:, neutral] - rule.cutoff) / TAU_RELATIVE
    z = np.log(np.maximum(probs, 1e-30)) + boost
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


CLOSE = 0.9   # a zero-shot anchor at least this close to a trained one: the two are barely told apart
MOVED = 0.9   # trained classes' mean cosine to their trained anchors below this: the wording moved them


@dataclass(frozen=True)
class AnchorRow:
    """One class of edited prompts against the trained anchors. ``own``: cosine to its own trained
    anchor (None for a zero-shot class); ``nearest``/``nearest_cos``: the closest trained class
    other than itself (None when there is none)."""

    name: str
    trained: bool
    own: float | None
    nearest: str | None
    nearest_cos: float | None
    warning: str = ""


@dataclass(frozen=True)
class AnchorReport:
    """``rows``: one ``AnchorRow`` per class of the edited prompts; ``warnings``: short sentences."""

    rows: tuple
    warnings: tuple


def anchor_report(prompts: Prompts, trained: Prompts, raw: Prompts | None = None) -> AnchorReport:
    """How far edited anchors [K, d] sit from the trained ones [K0, d] (both L2-normalised).

    Warns when a zero-shot class's nearest trained class is at cosine >= ``CLOSE`` (0.9; the
    MiniLM anchors of the 8 FER+ classes sit 0.72-0.87 apart, so 0.9 is closer than any two
    trained classes), and when the trained classes' mean cosine to their trained anchors is below
    ``MOVED`` (0.9: the template rephrased them far from the wording the model was trained on).
    ``raw``: the same prompts as their wording stands (``encode_prompts(..., wording="raw")``), for
    that second check, since adapting a new wording (transfer, projection) changes its anchors.
    """
    cos = prompts.anchors @ trained.anchors.T                 # [K, K0]
    index = {c: j for j, c in enumerate(trained.classes)}
    rows, own = [], []
    for k, name in enumerate(prompts.classes):
        j = index.get(name)
        others = cos[k].copy()
        if j is not None:
            others[j] = -np.inf
            own.append(float(cos[k, j]))
        n = int(np.argmax(others)) if np.isfinite(others).any() else None
        near = None if n is None else float(others[n])
        warning = ""
        if j is None and near is not None and near >= CLOSE:
            warning = f"{name} ≈ {trained.classes[n]} (cosine {near:.2f}): the model will barely tell them apart."
        rows.append(AnchorRow(name, j is not None, None if j is None else own[-1],
                              None if n is None else trained.classes[n], near, warning))
    warnings = [r.warning for r in rows if r.warning]
    if raw is not None:
        cos = raw.anchors @ trained.anchors.T
        own = [float(cos[k, index[name]]) for k, name in enumerate(raw.classes) if name in index]
    if own and np.mean(own) < MOVED:
        moved = " as the new wording stands" if raw is not None else ""
        wordings = (f"“{trained.template}”" if len(trained.templates) == 1
                    else f"{len(trained.templates)} wordings such as “{trained.template}”")
        warnings.append(f"The trained classes moved (mean cosine {np.mean(own):.2f} to their trained anchors"
                        f"{moved}): the model was trained on {wordings}; accuracy may drop.")
    return AnchorReport(tuple(rows), tuple(warnings))

