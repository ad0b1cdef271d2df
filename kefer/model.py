"""The visual side: an encoder from timm (or the pretrained registry), its projection into the
text space, the transformation network G, and the classifier baseline's head."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn

from timm.models import clean_state_dict

from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .models import parse_encoder_name, registry
from .models.encoders import create_timm
from .scoring import logits

log = logging.getLogger(__name__)


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> dict:
    """Load a state dict file (safetensors, or torch with an optional 'state_dict' key) into ``encoder``.

    Classifier heads are ignored. Returns {'loaded': n, 'missing': [...], 'unexpected': [...]};
    raises ValueError if the file matches none of the encoder's weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Encoder weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = clean_state_dict(state)
    own = encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(
            f"{path} matches none of the {type(encoder).__name__} weights (first keys: "
            f"{list(state)[:3]}); is it for another architecture?"
        )
    result = encoder.load_state_dict(matched, strict=False)
    report = {"loaded": len(matched), "missing": result.missing_keys,
              "unexpected": sorted(set(state) - set(matched))}
    log.info("%s: loaded %d tensors, %d missing, %d unused", path.name, report["loaded"], len(report["missing"]),
             len(report["unexpected"]))
    return report


class CLIPImageEncoder(nn.Module):
    """The image tower of an open_clip model: [B, 3, S, S] -> its projected embedding [B, D]."""

    def __init__(self, model_name: str, weights: str | None, img_size: int):
        super().__init__()
        import open_clip

        from .text import create_clip_model

        if weights is None:
            model = open_clip.create_model(model_name, pretrained=None)
        else:
            model = create_clip_model(model_name, weights, flag="--encoder")
        self.visual = model.visual
        size = self.visual.image_size
        side = size[0] if isinstance(size, tuple) else size
        if side != img_size:
            raise ValueError(f"clip:{model_name} takes {side} px images, not {img_size}; pass --img-size {side}")
        self.num_features = self.visual.output_dim
        self.mean, self.std = tuple(self.visual.preprocess_cfg["mean"]), tuple(self.visual.preprocess_cfg["std"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def timm_pretrained(name: str, img_size: int, **kwargs) -> nn.Module:
    """timm's ``name`` (e.g. ``resnet18.a1_in1k``) with its published weights, which timm fetches
    from the Hugging Face hub: a clear error where that is not reachable."""
    try:
        encoder = create_timm(name, img_size, pretrained=True, **kwargs)
    except Exception as e:
        raise FileNotFoundError(
            f"timm could not fetch the weights of {name} ({type(e).__name__}: {str(e)[:200]}). Offline, download "
            f"them elsewhere (timm.create_model({name!r}, pretrained=True) and save its state_dict) and pass "
            f"--encoder {name.split('.')[0]} --encoder-weights FILE") from e
    cfg = encoder.pretrained_cfg
    encoder.mean, encoder.std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    return encoder


def create_visual_encoder(name: str, img_size: int, weights: str | None = None, pretrained: bool = True,
                  batchnorm: str = "auto", **kwargs) -> nn.Module:
    """A feature extractor ``x [B, 3, H, W] -> [B, F]`` with ``.num_features``, ``.mean``, ``.std``.

    ``name`` is one of:
    - a kefer pretrained-registry name (e.g. ``facenet-casia``);
    - ``timm:<model>.<tag>``, timm's published weights (e.g. ``timm:resnet18.a1_in1k``; a download);
    - ``clip:<open_clip model>/<tag|file|random>``, a CLIP image tower (e.g. ``clip:ViT-B-16/openai``);
    - any timm model name, built from scratch (timm never downloads then) or from a ``weights`` file.
    ``pretrained=False`` builds the bare architecture (used when a checkpoint's weights replace it anyway).
    ``batchnorm`` ("auto", "frozen", "train") overrides a registry encoder's BatchNorm mode in training.
    """
    if batchnorm not in ("auto", "frozen", "train"):
        raise ValueError(f"batchnorm must be auto, frozen or train, not {batchnorm!r}")
    kind, model, tag = parse_encoder_name(name)
    if batchnorm != "auto" and kind != "registry":
        raise ValueError(f"batchnorm={batchnorm!r} applies to kefer's pretrained encoders "
                         f"({registry.list_encoders()}), not {name!r}.")

    if kind == "clip":
        return CLIPImageEncoder(model, None if tag == "random" or not pretrained else tag, img_size)
    if kind == "timm-hub" and pretrained:
        return timm_pretrained(model if tag is None else f"{model}.{tag}", img_size, **kwargs)
    if kind == "registry":
        return registry.create_encoder(name, img_size=img_size, weights=weights if pretrained else None,
                                       pretrained=pretrained,
                                       frozen_bn=None if batchnorm == "auto" else batchnorm == "frozen")
    if model not in timm.list_models():
        raise ValueError(
            f"Unknown encoder {name!r}: not a kefer pretrained encoder ({registry.list_encoders()}) "
            f"nor a timm model (see timm.list_models(), e.g. resnet18, swin_tiny_patch4_window7_224, "
            f"vit_base_patch16_224), 'timm:<model>.<tag>' or 'clip:<model>/<tag|file|random>'."
        )
    encoder = create_timm(model, img_size, **kwargs)
    encoder.mean, encoder.std = IMAGENET_MEAN, IMAGENET_STD
    if weights and pretrained:
        load_encoder_weights(encoder, weights)
    return encoder


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
