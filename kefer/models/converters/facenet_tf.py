"""FaceNet's frozen TensorFlow graph (David Sandberg's 20180408-102900, CASIA-WebFace) -> a state
dict of facenet-pytorch's InceptionResnetV1, read without TensorFlow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1


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
