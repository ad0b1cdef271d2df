"""Wording methods: how a template a model was not trained on becomes anchors, beside the product's
measured default (``project``, ``kefer.text.project_wording``), for the template studies.

``raw`` takes its embeddings as they stand (the paper's way), ``transfer`` moves them onto the trained
wording's class-common part and spread, ``project`` keeps the class deviations only along the trained
class contrasts (``project@M``: M times as many directions), ``project+transfer`` does both.
"""
from __future__ import annotations

import argparse
import re

import torch
import torch.nn.functional as F

from ..scoring import Prompts
from ..text import encode_classes, project_wording


def transfer_wording(new: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Anchors [K, d] for a wording the model was not trained on: ``new`` (the classes under that
    template, normalised [K, d]) with its class-common part and spread replaced by those of ``base``
    (the same classes under the model's trained templates, [K, d]), renormalised.

    The visual encoder learnt to match the trained anchors, whose shared component (the mean over
    classes) and spread (the deviations' Frobenius norm) belong to the trained wording; an unseen
    template shifts both, which costs far more accuracy than its class-specific directions do.
    What the new wording says about each class (its deviation from its own class mean) is kept.
    """
    deviation = new - new.mean(0)
    spread = deviation.norm()
    if spread > 0:
        deviation = deviation * ((base - base.mean(0)).norm() / spread)
    return F.normalize(base.mean(0) + deviation, dim=-1)


# How ``encode_prompts`` turns a template the model was not trained on into anchors
# (``adapt_wording``); the default was chosen by the rules in docs/results/wording-rule.md and rank-rule.md.
# The projections take a suffix ``@M``: keep M x (K0 - 1) trained contrast directions (``contrast_basis``).
WORDINGS = {"raw": "taken as its embeddings stand",
            "transfer": "moved onto the trained wording's class-common part and spread",
            "project": "kept only along the class contrasts the model was trained on",
            "project+transfer": "kept only along the trained class contrasts, then moved onto the trained wording"}
DEFAULT_WORDING = "project"


def parse_wording(name: str) -> tuple[str, int]:
    """A wording method's name -> (method, M): ``"project@4"`` -> ``("project", 4)``; M is 1 without
    a suffix. Raises ValueError for an unknown method or a bad suffix."""
    if not isinstance(name, str):
        raise TypeError(f"A wording method is a name such as 'project', not {name!r}.")
    method, at, multiple = name.partition("@")
    if method not in WORDINGS or (at and not (method.startswith("project") and re.fullmatch("[0-9]+", multiple)
                                              and int(multiple) >= 1)):
        raise ValueError(f"Unknown wording method {name!r}; use one of {list(WORDINGS)}, a projection optionally "
                         f"with @M (M x (classes - 1) directions, e.g. project@2).")
    return method, int(multiple or 1)



def adapt_wording(new: torch.Tensor, method: str, base: torch.Tensor | None = None,
                  basis: torch.Tensor | None = None) -> torch.Tensor:
    """One unseen template's anchors [K, d] by ``method`` (``parse_wording``): ``raw`` as they stand,
    ``transfer`` (``transfer_wording`` onto ``base`` [K, d], the classes under the trained templates),
    ``project`` (``project_wording`` on ``basis``, already of the method's rank), or ``project+transfer``."""
    method = parse_wording(method)[0]
    if method.startswith("project"):
        new = project_wording(new, basis)
    return transfer_wording(new, base) if method.endswith("transfer") else new


def wording_name(name: str) -> str:
    """argparse ``type=`` for a wording method (``text.parse_wording``): ``name``, or an error that
    says which names exist."""
    try:
        parse_wording(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return name


def trained_contrasts(rec, multiple: int = 1) -> torch.Tensor:
    """[r, d]: ``rec``'s trained classes under its trained templates, through ``contrast_basis``
    with ``multiple``. ValueError for a classifier baseline or ``multiple`` < 1."""
    if rec.trained_prompts.is_classifier:
        raise ValueError("This is a classifier-baseline model: it has no trained text contrasts.")
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, not {multiple}.")
    return rec._contrast_basis(multiple)   # the recogniser's own, kept with it


def encode_prompts(rec, template=None, classes=None, wording: str = DEFAULT_WORDING) -> Prompts:
    """``rec.encode_prompts`` with an unseen template turned into anchors by ``wording``
    (``parse_wording``). Except for ``raw``, an unseen wording's anchors so depend on which classes
    are given."""
    method, multiple = parse_wording(wording)
    if method == "raw":
        return rec.encode_prompts(template, classes, unseen=lambda anchors: anchors)
    names = list(dict.fromkeys(c.strip() for c in (classes if classes is not None else rec.classes) if c.strip()))
    base = (encode_classes(rec.text_encoder, names, list(rec.trained_prompts.templates))[0].float()   # as in training
            if method.endswith("transfer") and names else None)
    basis = trained_contrasts(rec, multiple) if method.startswith("project") else None
    return rec.encode_prompts(template, classes, unseen=lambda anchors: adapt_wording(anchors, wording, base, basis))
