"""Operating points: how a model's scores become answers, chosen once on validation and stored in
the checkpoint. This module applies them.

Both parts are optional and live under the checkpoint metadata's ``"operating"`` key (the JSON
``kefer`` header of a .safetensors file, or the metadata of a kefer .onnx file)::

    {"class_prior": {class: training frequency},
     "balance": {"strength": a, "rule": BALANCE_RULE, "val": {...}},
     "abstain": {"margin": t, "precision": p, "rule": ABSTAIN_RULE, "val": {...}},
     "temperature": {"value": T, ...}, "reference": {"alpha": ..., "beta": ..., "cutoff": ..., ...}}

- **balance** (prior correction: post-hoc logit adjustment, Menon et al., ICLR 2021): the logits
  get offsets -a * log(K * prior_k), K the number of classes in the prior. Relative to uniform, so
  a class with no known prior (a zero-shot class added by text) gets offset 0. The offsets travel
  in ``scoring.Prompts`` and ``scoring.score`` adds them: the one place scores are adjusted.
- **abstain**: a face's margin is its top-1 minus top-2 probability (after balancing); below the
  stored threshold its answer is ``UNCERTAIN`` (``analysis.FaceResult.label``).
- **temperature**: the probabilities are tempered, softmax(log p / T), so that they are calibrated.
- **reference**: how a person's measured neutral face changes the scores (``reference.ReferenceRule``).

Choosing them on validation is the lab's job (``kefer.lab.operating``, ``kefer lab operating``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from .reference import ReferenceRule
from .scoring import Prompts

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"                             # the answer for a face below the abstain margin


def class_prior(targets, classes, balance: str = "none") -> dict:
    """The class prior a model is trained under, {class: probability}: the frequencies count / total
    of training labels ``targets`` [N] (indices into ``classes``), or uniform where ``balance`` is
    ``oversample`` (every class drawn equally often); classes without a training image are left out."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes))
    if balance == "oversample":
        return {c: 1 / np.count_nonzero(counts) for c, n in zip(classes, counts) if n}
    return {c: float(n / counts.sum()) for c, n in zip(classes, counts) if n}


def margins(probs: np.ndarray) -> np.ndarray:
    """Probabilities [N, K] -> top-1 minus top-2 probability [N] (1 for a single class)."""
    probs = np.asarray(probs, np.float64)
    if probs.shape[-1] < 2:
        return np.ones(probs.shape[:-1])
    top = np.sort(probs, axis=-1)
    return top[..., -1] - top[..., -2]


@dataclass(frozen=True)
class OperatingPoint:
    """A model's stored operating point: ``prior`` {class: training frequency} ({}: unknown),
    balance ``strength`` a, abstain ``margin`` t and the ``reference`` rule for a person's neutral
    face (None: not chosen), and the ``temperature`` that calibrates the probabilities (1: none)."""

    prior: dict = field(default_factory=dict)
    strength: float | None = None
    margin: float | None = None
    reference: ReferenceRule | None = None
    temperature: float = 1.0

    @classmethod
    def from_meta(cls, meta: dict) -> "OperatingPoint":
        """The operating point stored in checkpoint metadata (empty when there is none)."""
        op = meta.get("operating") or {}
        return cls(dict(op.get("class_prior") or {}), (op.get("balance") or {}).get("strength"),
                   (op.get("abstain") or {}).get("margin"), ReferenceRule.from_meta(op.get("reference")),
                   float((op.get("temperature") or {}).get("value", 1.0)))

    def offsets(self, classes, strength: float) -> np.ndarray | None:
        """Logit offsets [K] for ``classes`` at ``strength``: -a * log(K * prior), 0 for a class
        outside the prior (zero-shot); None for strength 0. Raises ValueError without a prior."""
        if not strength:
            return None
        if not self.prior:
            raise ValueError("This model stores no training class frequencies: balancing needs them "
                             "(kefer.train.evaluate.training_prior computes them from its training set).")
        k = len(self.prior)
        return np.array([-strength * np.log(k * self.prior[c]) if c in self.prior else 0.0 for c in classes],
                        np.float32)

    def balance(self, prompts: Prompts, strength: float) -> Prompts:
        """``prompts`` balanced at ``strength`` (0: raw scores); abstaining as before."""
        return replace(prompts, offsets=self.offsets(prompts.classes, strength), strength=float(strength))

    def apply(self, prompts: Prompts, balanced: bool = True, abstain: bool = True) -> Prompts:
        """``prompts`` under this operating point: the stored strength if ``balanced``, the stored
        margin if ``abstain`` (each a no-op where none is stored)."""
        strength = self.strength if balanced and self.strength is not None else 0.0
        return replace(self.balance(prompts, strength), abstain_margin=self.margin if abstain else None,
                       reference_rule=self.reference, temperature=self.temperature)


def describe(prompts: Prompts) -> str:
    """The operating point of ``prompts`` in words, e.g. "balanced (a = 0.25), 'uncertain' below margin 0.31"."""
    parts = [f"balanced (a = {prompts.strength:g})" if prompts.strength else "raw scores"]
    if prompts.abstain_margin is not None:
        parts.append(f"'{UNCERTAIN}' below margin {prompts.abstain_margin:.2f}")
    return ", ".join(parts)


