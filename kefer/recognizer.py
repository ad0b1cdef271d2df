"""Inference API: a trained model plus its text knowledge, for face crops.

    import kefer
    rec = kefer.load()                  # the default ("accurate") model in assets/; kefer.load("fast")
    rec = kefer.load("runs/x")          # or a run directory / checkpoint file
    probs = rec.predict([face])         # [N, K]
    rec = kefer.load("accurate", flip=True)   # mirror-image test-time augmentation: twice the cost
    rec.set_prompts(classes=[*rec.classes, "confusion"])   # zero-shot: just new text embeddings
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import load_model
from .data.transforms import eval_transform
from .losses import TAU, similarity
from .model import KEFERModel, build_encoder
from .text import check_template, encode_classes, load_text_encoder

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = "accurate"
ALIASES = {"default": DEFAULT_MODEL}   # kefer.load("default") is the default model


def resolve_checkpoint(path: str | Path | None) -> Path:
    """A checkpoint file from a file path, a run directory, or a model name in ``assets/``."""
    if path is None:
        path = DEFAULT_MODEL
    path = ALIASES.get(str(path), path)
    p = Path(path)
    if p.is_dir():
        p = p / "best.safetensors"
    elif not p.exists() and (ASSETS / f"{path}.safetensors").exists():
        p = ASSETS / f"{path}.safetensors"
    if not p.is_file():
        shipped = sorted(f.stem for f in ASSETS.glob("*.safetensors"))
        raise FileNotFoundError(
            f"No kefer model at {path!r}. Models shipped in {ASSETS}: {shipped or 'none yet'}. "
            f"Train one with `python train.py --dataset ferplus --preset cpu --output runs/mine` and "
            f"pass runs/mine (or runs/mine/best.safetensors)."
        )
    return p


def as_rgb(face) -> Image.Image:
    """A face crop (PIL image, or HxW / HxWx3 / HxWx4 uint8 array) as RGB PIL."""
    if isinstance(face, Image.Image):
        return face.convert("RGB")
    arr = np.asarray(face)
    if arr.dtype != np.uint8:
        raise TypeError(f"Face arrays must be uint8 (got {arr.dtype}); scale them to 0-255 first.")
    return Image.fromarray(arr).convert("RGB")


class Recognizer:
    """A trained model with its class text embeddings; scores face crops."""

    def __init__(self, model: KEFERModel, meta: dict, device="cpu", name: str = "model", flip: bool = False):
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = torch.device(device)
        self.name = name
        self.flip = flip    # average each face's representation with its mirror image's
        self.input_size = int(meta["img_size"])
        self.transform = eval_transform(self.input_size, meta["mean"], meta["std"])
        self._own = (list(meta["classes"]), list(meta["templates"]), None if model.text is None else model.text.clone())
        self.classes, self.templates = list(self._own[0]), list(self._own[1])
        self._text_encoder = None

    @classmethod
    def from_checkpoint(cls, path, device="cpu", flip: bool = False) -> "Recognizer":
        path = resolve_checkpoint(path)
        state, meta = load_model(path)
        encoder = build_encoder(meta["encoder"], meta["img_size"], pretrained=False, **meta["encoder_kwargs"])
        model = KEFERModel(encoder, len(meta["classes"]), state.get("text"))
        model.load_state_dict(state)
        name = path.parent.name if path.name == "best.safetensors" else path.stem
        return cls(model, meta, device, name=name, flip=flip)

    @property
    def summary(self) -> str:
        """One line: name, encoder, input size, mirror averaging and the test accuracy stored at export."""
        metrics = self.meta.get("metrics", {})
        acc = f", FER+ test {100 * metrics['test_accuracy']:.1f}%" if "test_accuracy" in metrics else ""
        flip = "; scored mirror-averaged" if self.flip else ""
        return f"{self.name} ({self.meta['encoder']} @ {self.input_size} px{acc}{flip})"

    @property
    def template(self) -> str:
        return self.templates[0]

    @property
    def neutral_index(self) -> int | None:
        return self.classes.index("neutral") if "neutral" in self.classes else None

    @property
    def text_embeddings(self) -> np.ndarray:
        """Current class anchors [K, d], L2-normalised."""
        return F.normalize(self.model.anchors().float(), dim=-1).cpu().numpy()

    @torch.no_grad()
    def _features(self, faces) -> torch.Tensor:
        """One face (PIL, 2-D or 3-D array) or many (a list, or a 4-D array) -> f [N, d]."""
        if isinstance(faces, Image.Image) or (isinstance(faces, np.ndarray) and faces.ndim in (2, 3)):
            faces = [faces]
        faces = list(faces)
        if not faces:
            return torch.zeros(0, self.model.dim, device=self.device)
        x = torch.stack([self.transform(as_rgb(f)) for f in faces]).to(self.device)
        return self.model.represent(x, self.flip)

    def embed(self, faces) -> np.ndarray:
        """Face crops -> L2-normalised representations [N, d]."""
        return F.normalize(self._features(faces), dim=-1).cpu().numpy()

    @torch.no_grad()
    def scores(self, faces) -> tuple[np.ndarray, np.ndarray]:
        """Face crops -> (cosine similarity to each class anchor [N, K], probabilities [N, K])."""
        f = self._features(faces)
        cos = similarity(f, self.model.anchors())
        logits = self.model.head(f) if self.model.is_classifier else cos / TAU
        return cos.cpu().numpy(), logits.softmax(-1).cpu().numpy()

    def predict(self, faces) -> np.ndarray:
        """Face crops -> class probabilities [N, K]."""
        return self.scores(faces)[1]

    def set_prompts(self, template: str | None = None, classes: list[str] | None = None) -> None:
        """Re-encode the class texts with the checkpoint's text encoder (new classes are zero-shot)."""
        if self.model.is_classifier:
            raise ValueError("This is a classifier-baseline model: it has no text knowledge to re-prompt.")
        templates = [check_template(template)] if template is not None else self.templates
        classes = [c.strip() for c in (classes if classes is not None else self.classes) if c.strip()]
        if not classes:
            raise ValueError("Give at least one class name.")
        if self._text_encoder is None:
            self._text_encoder = load_text_encoder(self.meta["text_encoder"])
        text, _ = encode_classes(self._text_encoder, classes, templates)
        self.model.text = text.to(self.device)
        self.classes, self.templates = classes, templates

    def reset_prompts(self) -> None:
        """Back to the checkpoint's own classes, templates and text embeddings."""
        classes, templates, text = self._own
        self.classes, self.templates = list(classes), list(templates)
        if text is not None:
            self.model.text = text.to(self.device)


def load(path: str | Path | None = None, device: str = "cpu", flip: bool = False) -> Recognizer:
    """A Recognizer from a checkpoint file, a run directory, or a model name in ``assets/``
    (``None``: the default model). ``flip``: average each face with its mirror image (twice the cost)."""
    return Recognizer.from_checkpoint(path, device, flip)
