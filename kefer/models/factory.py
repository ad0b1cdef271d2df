"""The one encoder factory: ``create_encoder(name, img_size)`` for every kind of encoder name
(``names.parse_encoder_name``): kefer's pretrained registry, timm (from scratch, a weights file, or
timm's published weights), and CLIP image towers."""
from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
import torch.nn as nn

from timm.models import clean_state_dict

from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from . import registry
from .clip import create_clip_model
from .encoders import timm_features
from .names import parse_encoder_name

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
        encoder = timm_features(name, img_size, pretrained=True, **kwargs)
    except Exception as e:
        raise FileNotFoundError(
            f"timm could not fetch the weights of {name} ({type(e).__name__}: {str(e)[:200]}). Offline, download "
            f"them elsewhere (timm.create_model({name!r}, pretrained=True) and save its state_dict) and pass "
            f"--encoder {name.split('.')[0]} --encoder-weights FILE") from e
    cfg = encoder.pretrained_cfg
    encoder.mean, encoder.std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    return encoder


def create_encoder(name: str, img_size: int, weights: str | None = None, pretrained: bool = True,
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
        return registry.build_encoder(name, img_size=img_size, weights=weights if pretrained else None,
                                       pretrained=pretrained,
                                       frozen_bn=None if batchnorm == "auto" else batchnorm == "frozen")
    if model not in timm.list_models():
        raise ValueError(
            f"Unknown encoder {name!r}: not a kefer pretrained encoder ({registry.list_encoders()}) "
            f"nor a timm model (see timm.list_models(), e.g. resnet18, swin_tiny_patch4_window7_224, "
            f"vit_base_patch16_224), 'timm:<model>.<tag>' or 'clip:<model>/<tag|file|random>'."
        )
    encoder = timm_features(model, img_size, **kwargs)
    encoder.mean, encoder.std = IMAGENET_MEAN, IMAGENET_STD
    if weights and pretrained:
        load_encoder_weights(encoder, weights)
    return encoder


