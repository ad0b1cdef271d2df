"""Knowledge: prompts, their templates, and class anchors from a frozen text encoder
(``kefer.text_encoders``).

A class's anchor is its prompts' embeddings under every template, each normalised, averaged and
renormalised. A template the model was not trained on keeps only the class contrasts the model
was trained to read (``project_wording``: the measured default; the lab's ``kefer.lab.wordings``
holds the alternatives). ``class_embeddings`` caches anchors on disk by encoder id and prompts, so
repeated runs (and machines without the text model, e.g. a GPU node) need not load the encoder again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re

import torch
import torch.nn.functional as F

from .io import atomic_write, cache_dir
from .models.names import parse_encoder_name
from .text_encoders import TextEncoder, create_text_encoder

log = logging.getLogger(__name__)

PLACEHOLDER = "[CLS]"
DEFAULT_TEMPLATE = "A photo of a person making a [CLS] facial expression."
PAPER_TEMPLATES = [
    "This person is [CLS].",
    "A photo of a [CLS] face.",
    "This is a [CLS] facial expression.",
    "A person makes a [CLS] facial expression.",
    "An ID photo of a [CLS] facial expression.",
    "A person is feeling [CLS].",
    "A person feeling [CLS] on the face.",
    "A photo of a person with a [CLS] expression on the face.",
    DEFAULT_TEMPLATE,
]


def check_template(template: str) -> str:
    """Return ``template`` if it holds the ``[CLS]`` placeholder, else raise ValueError."""
    if PLACEHOLDER not in template:
        raise ValueError(
            f"Prompt template {template!r} has no {PLACEHOLDER} placeholder; "
            f"write it where the class name goes, e.g. {DEFAULT_TEMPLATE!r}."
        )
    return template


def build_prompt(template: str, class_name: str) -> str:
    """Fill ``[CLS]`` with a class name, fixing the article ("an anger facial expression")."""
    check_template(template)
    article = "an" if class_name[:1].lower() in "aeiou" else "a"
    template = re.sub(r"\b(a|an) \[CLS\]", f"{article} [CLS]", template)
    template = re.sub(r"\b(A|An) \[CLS\]", f"{article.capitalize()} [CLS]", template)
    return template.replace(PLACEHOLDER, class_name)


def encode_templates(encoder: TextEncoder, classes: list[str],
                     templates: list[str]) -> tuple[torch.Tensor, list[list[str]]]:
    """Each class under each template, embedded in one batch: (normalised embeddings [K, T, d],
    prompts [K][T])."""
    if not classes:
        raise ValueError("At least one class name is needed.")
    if not templates:
        raise ValueError("At least one prompt template is needed.")
    prompts = [[build_prompt(t, c) for t in templates] for c in classes]
    flat = encoder.encode([p for per_class in prompts for p in per_class])
    return F.normalize(flat, dim=-1).view(len(classes), len(templates), -1), prompts


def encode_classes(encoder: TextEncoder, classes: list[str], templates: list[str]) -> tuple[torch.Tensor, list[list[str]]]:
    """Class text embeddings averaged over templates.

    Each prompt embedding is normalised, averaged per class, then renormalised.
    Returns (embeddings [K, d], prompts [K][T]).
    """
    emb, prompts = encode_templates(encoder, classes, templates)
    return F.normalize(emb.mean(1), dim=-1), prompts


def contrast_basis(sets: torch.Tensor, multiple: int = 1) -> torch.Tensor:
    """[K0, T, d] the trained classes under each trained template -> [r, d] orthonormal rows: the
    principal directions of the class deviations (each template's anchors minus their class mean),
    the class contrasts the visual encoder was trained to read; r = ``multiple`` x (K0 - 1), at most
    the deviations' rank (K0 - 1 for one template)."""
    deviations = sets - sets.mean(0, keepdim=True)
    _, singular, vh = torch.linalg.svd(deviations.reshape(-1, sets.shape[-1]), full_matrices=False)
    rank = int((singular > singular[0] * 1e-4).sum())
    return vh[: min(multiple * (sets.shape[0] - 1), rank)]


def project_wording(new: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Anchors [K, d] for an unseen wording: ``new``'s class deviations (from its own class mean)
    kept only along ``basis`` [r, d] (``contrast_basis``), on that mean, renormalised. What the
    wording adds outside the trained class contrasts is a direction the visual encoder never learnt
    to read, so it only adds noise to the scores. With no trained contrast (a one-class model,
    ``basis`` [0, d]) it returns ``new`` normalised, as it stands."""
    if not len(basis):
        return F.normalize(new, dim=-1)
    mean = new.mean(0)
    return F.normalize(mean + (new - mean) @ basis.T @ basis, dim=-1)


def class_embeddings(spec: str, classes: list[str], templates: list[str]) -> tuple[torch.Tensor, list[list[str]], str]:
    """``encode_classes`` with the encoder loaded from ``spec``, cached on disk.

    The cache file (``<kefer cache>/text/<hash>.safetensors``) is keyed by the encoder id and the
    exact prompts; ``auto`` is resolved first, so it is never cached under that name. A CLIP weights
    *file* is not cached (its contents can change under the same path).
    Returns (embeddings [K, d], prompts [K][T], encoder id).
    """
    from safetensors.torch import load_file, save_file

    encoder = create_text_encoder(spec) if spec == "auto" else None
    text_id = encoder.id if encoder is not None else spec
    prompts = [[build_prompt(t, c) for t in templates] for c in classes]
    key = hashlib.sha256(repr((text_id, prompts)).encode()).hexdigest()[:24]
    path = cache_dir() / "text" / f"{key}.safetensors"
    if path.is_file():
        return load_file(path)["text"], prompts, text_id
    encoder = encoder or create_text_encoder(spec)
    emb, prompts = encode_classes(encoder, classes, templates)
    kind, _, weights = parse_encoder_name(text_id)
    if kind == "clip" and os.path.exists(weights):
        return emb, prompts, text_id
    atomic_write(path, lambda tmp: save_file({"text": emb.contiguous()}, tmp,
                                             metadata={"text_encoder": text_id, "prompts": repr(prompts)}))
    return emb, prompts, text_id
