"""The network kefer trains: a visual encoder, its projection into the text space, the
transformation network G (Eq. 6), and the classifier baseline's head."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..scoring import logits


def mirror_average(run, x, flip: bool):
    """``run(x)`` [B, d], averaged with ``run`` of the mirror images when ``flip`` (x [B, 3, H, W],
    a torch tensor or numpy array): the one place mirror test-time augmentation is done."""
    if not flip:
        return run(x)
    mirrored = x.flip(-1) if isinstance(x, torch.Tensor) else np.ascontiguousarray(x[..., ::-1])
    return (run(x) + run(mirrored)) / 2


class TransformationNet(nn.Module):
    """G (Eq. 6): expression representation -> its neutral counterpart, [B, d] -> [B, d]."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


class KEFERModel(nn.Module):
    """Encoder + projection into the text space, scored against frozen text embeddings.

    With ``text`` [K, d] the logits are cos(f, t_k) / tau (knowledge mode); with ``text=None`` it
    is the classifier baseline: a linear head on the encoder features.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, text: torch.Tensor | None = None):
        super().__init__()
        self.encoder = encoder
        feat = encoder.num_features
        self.dim = feat if text is None else text.shape[1]
        self.proj = nn.Linear(feat, self.dim) if feat != self.dim else nn.Identity()
        self.transform = TransformationNet(self.dim) if text is not None else None
        self.head = nn.Linear(self.dim, num_classes) if text is None else None
        self.register_buffer("text", None if text is None else text.clone().float())

    @property
    def is_classifier(self) -> bool:
        return self.text is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] -> representations f [B, d] (not normalised)."""
        return self.proj(self.encoder(x))

    def represent(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """Images [B, 3, H, W] -> f [B, d] in fp32; ``flip`` averages each with its mirror image's."""
        return mirror_average(lambda images: self(images).float(), x, flip)

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """[B, d] -> [B, K]: cos(f, t_k) / tau, or the baseline head."""
        return logits(f, self.text, self.head)

    def anchors(self) -> torch.Tensor:
        """Class anchors in representation space [K, d]: text embeddings, or the head's weights."""
        return self.head.weight.detach() if self.is_classifier else self.text
