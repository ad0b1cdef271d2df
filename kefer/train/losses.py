"""The paper's losses (METHOD.md, Eq. 4-11) and the classifier baseline.

Shapes: ``f`` [B, d] visual representations, ``n`` [B, d] their neutral transforms G(f),
``text`` [K, d] frozen class text embeddings, ``y`` [B] class indices, ``nu`` the neutral index.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..scoring import TAU, similarity

MARGIN = 2.0
TERMS = ("ce", "t", "sc", "infonce", "classifier")


def knowledge_ce(f, text, y, tau: float = TAU, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5: cross-entropy over softmax(cos(f, t_k) / tau); ``y`` [B] classes or [B, K] distributions.
    ``offset`` [K] is added to the logits during training only (logit-adjusted loss)."""
    logits = similarity(f, text) / tau
    return F.cross_entropy(logits if offset is None else logits + offset, y)


def transformation_loss(f, n, text, y, nu: int) -> torch.Tensor:
    """Eq. 9: mean over non-neutral samples of 1 - cos(f - n, t_y - t_nu); 0 if there are none."""
    keep = y != nu
    if not keep.any():
        return f.sum() * 0.0
    delta_f = (f - n)[keep]
    delta_t = text[y[keep]] - text[nu]
    return (1 - F.cosine_similarity(delta_f, delta_t, dim=-1)).mean()


def self_contrast(f, n, text, y, nu: int, form: str = "per-sample", margin: float = MARGIN) -> torch.Tensor:
    """Eq. 10: pull f toward its class text, push its neutral transform n away; 0 if no non-neutral.

    ``per-sample``: mean_i [m - cos(t_yi, f_i) + cos(t_yi, n_i)] (the paper).
    ``pairwise``:  mean_ij [m - cos(t_yi, f_j) + cos(t_yi, n_j)] (the public script).
    """
    keep = y != nu
    if not keep.any():
        return f.sum() * 0.0
    anchors = F.normalize(text[y[keep]], dim=-1)
    pos = F.normalize(f[keep], dim=-1)
    neg = F.normalize(n[keep], dim=-1)
    if form == "per-sample":
        return (margin - (anchors * pos).sum(-1) + (anchors * neg).sum(-1)).mean()
    if form == "pairwise":
        return (margin - anchors @ pos.T + anchors @ neg.T).mean()
    raise ValueError(f"Unknown self-contrast form {form!r}; use 'per-sample' or 'pairwise'.")


def info_nce(f, n, text, y, nu: int, tau: float = TAU) -> torch.Tensor:
    """Fig. 4 alternative to L_sc: InfoNCE with anchor t_y, positive f, negative n; 0 if no non-neutral."""
    keep = y != nu
    if not keep.any():
        return f.sum() * 0.0
    anchors = F.normalize(text[y[keep]], dim=-1)
    pos = (anchors * F.normalize(f[keep], dim=-1)).sum(-1)
    neg = (anchors * F.normalize(n[keep], dim=-1)).sum(-1)
    logits = torch.stack([pos, neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=f.device))


def prior_offset(frequencies, strength: float) -> torch.Tensor | None:
    """[K] logit offsets ``strength * log(frequency)`` from the training class ``frequencies`` [K]
    for the logit-adjusted cross-entropy (Menon et al., ICLR 2021; strength 1 is the balanced
    softmax of Ren et al., 2020): frequent classes must win by a larger margin, so rare ones are not
    drowned. None for strength 0. ValueError if a class has no training image."""
    if not strength:
        return None
    frequencies = torch.as_tensor(frequencies, dtype=torch.float64)
    if (frequencies == 0).any():
        raise ValueError(f"--ce-adjust needs every class in the training set; frequencies {frequencies.tolist()}")
    return (strength * torch.log(frequencies)).float()


@dataclass
class LossConfig:
    """Which terms are on (a Table 2 row) and their weights."""

    terms: tuple[str, ...] = ("ce", "t", "sc")
    weights: dict | None = None
    sc_form: str = "per-sample"
    tau: float = TAU
    logit_offset: torch.Tensor | None = None   # [K], added to the cross-entropy logits (``prior_offset``)

    def __post_init__(self):
        unknown = set(self.terms) - set(TERMS)
        if unknown or not self.terms:
            raise ValueError(f"Unknown loss term(s) {sorted(unknown)}; choose from {TERMS}.")
        if "classifier" in self.terms and len(self.terms) > 1:
            raise ValueError("The classifier baseline is a loss of its own; don't combine it with others.")
        if {"sc", "infonce"} <= set(self.terms):
            raise ValueError("'infonce' replaces 'sc'; use one of them.")

    @property
    def needs_neutral(self) -> bool:
        return bool({"t", "sc", "infonce"} & set(self.terms))

    def weight(self, term: str) -> float:
        return (self.weights or {}).get(term, 1.0)


def total_loss(cfg: LossConfig, f, text, y, nu: int | None, transform=None, head=None,
               soft: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Eq. 11: sum of the weighted terms. Returns (loss, {term: detached value}).

    ``transform`` is G (needed by t / sc / infonce), ``head`` the baseline's linear classifier.
    ``soft`` [B, K]: target distributions (FER+ votes) for the cross-entropy terms instead of ``y``;
    L_t, L_sc and InfoNCE still use the class ``y``.
    """
    parts = {}
    target = y if soft is None else soft
    if "classifier" in cfg.terms:
        out = head(f)
        parts["classifier"] = F.cross_entropy(out if cfg.logit_offset is None else out + cfg.logit_offset, target)
    if "ce" in cfg.terms:
        parts["ce"] = knowledge_ce(f, text, target, cfg.tau, cfg.logit_offset)
    if cfg.needs_neutral:
        n = transform(f)
        if "t" in cfg.terms:
            parts["t"] = transformation_loss(f, n, text, y, nu)
        if "sc" in cfg.terms:
            parts["sc"] = self_contrast(f, n, text, y, nu, cfg.sc_form)
        if "infonce" in cfg.terms:
            parts["infonce"] = info_nce(f, n, text, y, nu, cfg.tau)
    loss = sum(cfg.weight(k) * v for k, v in parts.items())
    return loss, {k: v.detach() for k, v in parts.items()}
