"""Inference backends: the encoder and projection, images [N, 3, S, S] -> representations f [N, d].

``TorchBackend`` runs the KEFERModel itself (any device, the fallback). ``OnnxBackend`` runs an
ONNX export of it with ONNX Runtime on the CPU: the same outputs, 2.4x faster for ``accurate``
on this project's 2 cores (``benchmarks/bench_frame.py``), and an int8 variant (``kefer.quantize``)
faster still. A kefer ONNX file carries what inference needs
besides the network (classes, prompts, text embeddings, metrics: the checkpoint's metadata), so a
model loaded from one can still be re-prompted.

An ONNX file is written by ``export_onnx``; for a .safetensors checkpoint, ``cached_onnx`` writes it
once into the cache (``$KEFER_CACHE/onnx``) under the checkpoint's sha256, as the pretrained
registry does with its conversions.
"""
from __future__ import annotations

import base64
import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write, cache_dir, sha256

log = logging.getLogger(__name__)

ONNX_FORMAT = "kefer-onnx-1"   # bump when the file layout changes; older files are then refused
OPSET = 17
# tensors besides the network that inference needs, stored in the ONNX file's metadata
EXTRA_TENSORS = ("text", "head.weight", "head.bias")


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class TorchBackend:
    """The KEFERModel in torch: ``(x [N, 3, S, S] float32 numpy) -> f [N, d] float32 numpy``."""

    def __init__(self, model, device="cpu"):
        self.model = model
        self.device = torch.device(device)
        self.name = "torch" if self.device.type == "cpu" else f"torch {self.device}"

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


class OnnxBackend:
    """An exported encoder in ONNX Runtime (CPU): ``(x [N, 3, S, S] float32) -> f [N, d] float32``.

    threads: ONNX Runtime's intra-op threads (None: torch's current CPU thread count, so
    ``torch.set_num_threads`` in app.py and the benchmarks governs both backends alike). Its threads
    do not spin-wait between calls: each call is followed by face detection in torch, whose threads
    a spinning pool would take the cores from (with spinning, ``kefer analyze`` on a video ran at
    25 frames/s on 2 cores instead of about 40: ``benchmarks/bench_video.py``).
    """

    def __init__(self, path: str | Path, quantised: bool = False, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.name = "onnxruntime int8" if quantised else "onnxruntime"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0]


def _encode_tensor(t: torch.Tensor) -> str:
    a = t.detach().float().cpu().numpy()
    return json.dumps({"shape": list(a.shape), "data": base64.b64encode(a.astype("<f4").tobytes()).decode()})


def _decode_tensor(s: str) -> torch.Tensor:
    d = json.loads(s)
    return torch.from_numpy(np.frombuffer(base64.b64decode(d["data"]), "<f4").reshape(d["shape"]).copy())


def export_onnx(model, meta: dict, dest: str | Path, source_sha256: str = "") -> Path:
    """Write a KEFERModel's forward, images [N, 3, S, S] -> f = proj(encoder(x)) [N, d], as ONNX
    (dynamic batch axis, opset 17) with ``meta``
    and the extra tensors (text embeddings, classifier head) in its metadata; atomically."""
    import onnx

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = int(meta["img_size"])
    model = copy.deepcopy(model).float().cpu().eval()
    dummy = torch.zeros(2, 3, size, size)

    def write(tmp):
        torch.onnx.export(model, (dummy,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}})
        proto = onnx.load(str(tmp))
        state = model.state_dict()
        props = {"format": ONNX_FORMAT, "kefer": json.dumps(meta), "source_sha256": source_sha256}
        props.update({f"tensor:{k}": _encode_tensor(state[k]) for k in EXTRA_TENSORS if state.get(k) is not None})
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))

    atomic_write(dest, write)
    return dest


def update_onnx_meta(path: str | Path, meta: dict) -> None:
    """Replace the checkpoint metadata stored in a kefer ONNX file (e.g. with measured metrics)."""
    import onnx

    proto = onnx.load(str(path))
    next(p for p in proto.metadata_props if p.key == "kefer").value = json.dumps(meta)
    atomic_write(Path(path), lambda tmp: onnx.save(proto, str(tmp)))


def update_file_meta(path: str | Path, changes: dict) -> dict:
    """Merge ``changes`` into the metadata of a kefer model file (.safetensors: tensors kept byte for
    byte; .onnx: the graph unchanged); returns the new metadata."""
    from .checkpoint import read_meta, update_meta

    path = Path(path)
    onnx_file = path.suffix == ".onnx"
    meta = {**(read_onnx_meta(path)[0] if onnx_file else read_meta(path)), **changes}
    (update_onnx_meta if onnx_file else update_meta)(path, meta)
    return meta


def read_onnx_meta(path: str | Path) -> tuple[dict, dict, dict]:
    """(checkpoint metadata, extra tensors {name: tensor}, raw properties) of a kefer ONNX file.

    Raises ValueError, with what to do, for a file that is not ONNX, not kefer's, or of another
    kefer ONNX format version.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ValueError(f"{path.name} is not a readable ONNX file ({type(err).__name__}).") from err
    props = {p.key: p.value for p in proto.metadata_props}
    if "kefer" not in props:
        raise ValueError(f"{path.name} is an ONNX file but not a kefer model (no kefer metadata); export one with "
                         f"`kefer export RUN out.onnx`.")
    if props.get("format") != ONNX_FORMAT:
        raise ValueError(f"{path.name} was written in kefer ONNX format {props.get('format')!r}; this kefer reads "
                         f"{ONNX_FORMAT!r}. Export it again from its checkpoint with `kefer export`.")
    meta = json.loads(props["kefer"])
    tensors = {k[len("tensor:"):]: _decode_tensor(v) for k, v in props.items() if k.startswith("tensor:")}
    shape = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if shape[1:] != [3, meta["img_size"], meta["img_size"]]:
        raise ValueError(f"{path.name}: its network takes {shape[1:]} images but its metadata says "
                         f"{meta['img_size']} px; the file was altered or mixed up. Export it again.")
    return meta, tensors, props


def cached_onnx(checkpoint: str | Path, model, meta: dict) -> Path:
    """The fp32 ONNX export of a .safetensors checkpoint, written on first use into
    ``$KEFER_CACHE/onnx/<name>-<sha256[:16]>-<ONNX_FORMAT>.onnx`` (a few seconds) and reused after
    (a cached file that does not read back as this checkpoint's export is written again)."""
    digest = sha256(checkpoint)
    dest = cache_dir() / "onnx" / f"{Path(checkpoint).stem}-{digest[:16]}-{ONNX_FORMAT}.onnx"
    if dest.is_file():
        try:
            if read_onnx_meta(dest)[2].get("source_sha256") == digest:
                return dest
        except ValueError:
            pass
        log.warning("cached ONNX file %s does not match %s; writing it again", dest, checkpoint)
    log.info("exporting %s to ONNX once (cached in %s)", Path(checkpoint).name, dest.parent)
    return export_onnx(model, meta, dest, source_sha256=digest)

