"""Inference API: a trained model plus its text knowledge, for face crops and whole images.

    import kefer
    rec = kefer.load()                  # the default ("accurate") model in assets/; kefer.load("fast")
    rec = kefer.load("runs/x")          # or a run directory / checkpoint file / exported .onnx file
    rec = kefer.load("accurate", backend="torch")   # "auto" (default): ONNX Runtime on the CPU if installed
    probs = rec.predict([face])         # [N, K]
    faces = rec.analyze("group.jpg")    # every face: box, landmarks, crop, probabilities, label
    rec = kefer.load("accurate", flip=True)   # mirror-image test-time augmentation: twice the cost
    rec.set_prompts(classes=[*rec.classes, "confusion"])   # zero-shot: just new text embeddings
    rec = kefer.load("accurate", balanced=False, abstain=False)   # raw scores, never "uncertain"
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import backend as backends
from .checkpoint import load_model
from .data.transforms import eval_transform
from .model import KEFERModel, create_visual_encoder, mirror_average
from .operating import OperatingPoint, describe
from .scoring import Prompts, l2_normalise, score
from .text import (DEFAULT_WORDING, adapt_wording, check_template, contrast_basis, create_text_encoder, encode_classes,
                   encode_templates, parse_wording)

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = "accurate"
ALIASES = {"default": DEFAULT_MODEL}   # kefer.load("default") is the default model
BACKENDS = ("auto", "torch", "onnx")
SUFFIXES = (".safetensors", ".onnx")


def shipped_models() -> list[str]:
    """Names of the models in assets/ (``accurate``, ``accurate-int8``, ``fast``, ...)."""
    return sorted(f.stem for suffix in SUFFIXES for f in ASSETS.glob(f"*{suffix}"))


def resolve_checkpoint(path: str | Path | None) -> Path:
    """A checkpoint file (.safetensors or .onnx) from a file path, a run directory, or a model name
    in ``assets/``."""
    if path is None:
        path = DEFAULT_MODEL
    path = ALIASES.get(str(path), path)
    p = Path(path)
    if p.is_dir():
        p = p / "best.safetensors"
    elif not p.exists():
        p = next((ASSETS / f"{path}{s}" for s in SUFFIXES if (ASSETS / f"{path}{s}").is_file()), p)
    if not p.is_file():
        raise FileNotFoundError(
            f"No kefer model at {path!r}. Models shipped in {ASSETS}: {shipped_models() or 'none yet'}. "
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
    """A trained model with its class prompts; scores face crops and finds faces in images.

    The network runs through ``backend`` (``TorchBackend`` or ``OnnxBackend``): face crops
    [N, S, S, 3] -> representations f [N, d]. Scoring is ``kefer.scoring.score`` against
    ``prompts``, which methods also take per call, so callers with their own prompts (e.g. each
    browser tab) share one Recognizer without changing it. The checkpoint's operating point
    (``operating``: balance strength, abstain margin) is applied to its prompts as ``balanced`` and
    ``abstain`` ask, also to prompts it encodes; ``operate`` applies it to any prompts.
    """

    def __init__(self, meta: dict, backend, extra: dict, name: str = "model", flip: bool = False,
                 model: KEFERModel | None = None, balanced: bool = True, abstain: bool = True):
        self.meta = meta
        self.backend = backend
        self.model = model   # the torch model (None for a model loaded from an .onnx file)
        self.name = name
        self.flip = flip    # average each face's representation with its mirror image's
        self.input_size = int(meta["img_size"])
        self.transform = eval_transform(self.input_size, meta["mean"], meta["std"])
        head = None
        if extra.get("text") is not None:
            anchors = l2_normalise(extra["text"].numpy())
        else:
            weight, bias = extra["head.weight"].numpy(), extra["head.bias"].numpy()
            anchors, head = l2_normalise(weight), (weight.astype(np.float32), bias.astype(np.float32))
        self.operating = OperatingPoint.from_meta(meta)
        self.balanced, self.abstain = balanced, abstain
        for asked, stored, what in ((balanced, self.operating.strength, "balance strength"),
                                    (abstain, self.operating.margin, "abstain margin")):
            if asked and stored is None:
                log.info("%s stores no %s: not applied", name, what)
        self.own_prompts = self.operate(Prompts(tuple(meta["classes"]), tuple(meta["templates"]), anchors, head,
                                                trained=tuple(meta["classes"])))
        self.prompts = self.own_prompts
        self._text_encoder = None
        self._text_lock = threading.Lock()
        self._contrast_bases = {}
        self._image_analyzer = None

    @classmethod
    def from_checkpoint(cls, path, device="cpu", flip: bool = False, backend: str = "auto", balanced: bool = True,
                        abstain: bool = True) -> "Recognizer":
        """See ``load``."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        on_cpu = torch.device(device).type == "cpu"
        if backend == "onnx" and not on_cpu:
            raise ValueError("backend='onnx' runs on the CPU; pass device='cpu' or backend='torch'.")
        path = resolve_checkpoint(path)
        name = path.parent.name if path.name == "best.safetensors" else path.stem
        if path.suffix == ".onnx":
            if backend == "torch":
                raise ValueError(f"{path.name} is an ONNX file: it has no torch weights. Load its .safetensors "
                                 f"checkpoint for the torch backend.")
            if not on_cpu:
                raise ValueError(f"{path.name} runs on the CPU (ONNX Runtime); pass device='cpu'.")
            _require_onnxruntime()
            meta, extra, _ = backends.read_onnx_meta(path)
            return cls(meta, backends.OnnxBackend(path, quantised="quantization" in meta), extra, name, flip,
                       balanced=balanced, abstain=abstain)
        state, meta = load_model(path)
        encoder = create_visual_encoder(meta["encoder"], meta["img_size"], pretrained=False, **meta["encoder_kwargs"])
        model = KEFERModel(encoder, len(meta["classes"]), state.get("text"))
        model.load_state_dict(state)
        model = model.to(device).eval()
        if backend == "onnx":
            _require_onnxruntime()
        if backend == "onnx" or (backend == "auto" and on_cpu and backends.onnx_available()):
            runner = backends.OnnxBackend(backends.cached_onnx(path, model, meta))
        else:
            runner = backends.TorchBackend(model, device)
        extra = {k: state.get(k) for k in backends.EXTRA_TENSORS}
        return cls(meta, runner, extra, name, flip, model=model, balanced=balanced, abstain=abstain)

    @property
    def summary(self) -> str:
        """One line: name, encoder, input size, backend, mirror averaging, the stored FER+ test accuracy
        and the operating point in use."""
        metrics = self.meta.get("metrics", {})
        acc = f", FER+ test {100 * metrics['test_accuracy']:.2f}%" if "test_accuracy" in metrics else ""
        flip = "; scored mirror-averaged" if self.flip else ""
        return (f"{self.name} ({self.meta['encoder']} @ {self.input_size} px{acc}; {self.backend.name}{flip}; "
                f"{describe(self.prompts)})")

    @property
    def classes(self) -> list[str]:
        return list(self.prompts.classes)

    @property
    def templates(self) -> list[str]:
        return list(self.prompts.templates)

    @property
    def template(self) -> str:
        return self.prompts.template

    @property
    def trained_templates(self) -> list[str]:
        """The templates the checkpoint was trained on (its own prompts'), whatever it is prompted with now."""
        return list(self.own_prompts.templates)

    @property
    def neutral_index(self) -> int | None:
        return self.prompts.neutral_index

    @property
    def text_embeddings(self) -> np.ndarray:
        """Current class anchors [K, d], L2-normalised."""
        return self.prompts.anchors

    def preprocess(self, faces) -> np.ndarray:
        """One face (PIL, 2-D or 3-D uint8 array) or many (a list, or a 4-D array) -> [N, 3, S, S] float32."""
        if isinstance(faces, Image.Image) or (isinstance(faces, np.ndarray) and faces.ndim in (2, 3)):
            faces = [faces]
        faces = list(faces)
        if not faces:
            return np.zeros((0, 3, self.input_size, self.input_size), np.float32)
        return torch.stack([self.transform(as_rgb(f)) for f in faces]).numpy()

    def represent(self, x, flip: bool | None = None) -> np.ndarray:
        """Preprocessed images [N, 3, S, S] (numpy or torch, float32) -> f [N, d] float32, not
        normalised; ``flip`` (default: the recogniser's) averages each with its mirror image's."""
        x = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
        if not len(x):
            return np.zeros((0, self.own_prompts.anchors.shape[1]), np.float32)
        return mirror_average(self.backend, x, self.flip if flip is None else flip)

    def features(self, faces) -> np.ndarray:
        """Face crops -> representations f [N, d] (not normalised)."""
        return self.represent(self.preprocess(faces))

    def embed(self, faces) -> np.ndarray:
        """Face crops -> L2-normalised representations [N, d]."""
        return l2_normalise(self.features(faces))

    def score(self, features: np.ndarray, prompts: Prompts | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Representations [N, d] -> (cosines [N, K], probabilities [N, K]) against ``prompts``
        (default: the current ones)."""
        return score(features, prompts or self.prompts)

    def scores(self, faces, prompts: Prompts | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Face crops -> (cosine similarity to each class anchor [N, K], probabilities [N, K])."""
        return self.score(self.features(faces), prompts)

    def predict(self, faces, prompts: Prompts | None = None) -> np.ndarray:
        """Face crops -> class probabilities [N, K]."""
        return self.scores(faces, prompts)[1]

    @property
    def text_encoder(self):
        """The checkpoint's text encoder, loaded on first use (seconds) and kept."""
        with self._text_lock:
            if self._text_encoder is None:
                self._text_encoder = create_text_encoder(self.meta["text_encoder"])
            return self._text_encoder

    def encode_prompts(self, template: str | list[str] | None = None, classes: list[str] | None = None,
                       wording: str = DEFAULT_WORDING) -> Prompts:
        """New prompts from the checkpoint's text encoder (new classes are zero-shot); changes nothing.
        Several templates (repeats dropped) are averaged per class (normalise, mean, renormalise).

        ``wording``: how a template the model was not trained on (not in ``trained_templates``)
        becomes anchors (``text.adapt_wording``): ``raw`` takes its embeddings as they are (the
        paper's way); ``transfer`` moves it onto the trained wording's class-common part and spread,
        against the same classes under the trained templates; ``project`` keeps its class deviations
        (from the given classes' mean) only along the trained class contrasts (``contrast_basis``;
        ``project@M``: M times as many directions); ``project+transfer`` does both. Except for
        ``raw``, an unseen wording's anchors so depend on which classes are given. A trained
        template is always taken as it is.

        Raises ValueError for a template without [CLS], no class names, an unknown ``wording`` or a
        classifier baseline.
        """
        if self.own_prompts.is_classifier:
            raise ValueError("This is a classifier-baseline model: it has no text knowledge to re-prompt.")
        method, multiple = parse_wording(wording)
        if template is None:
            templates = self.templates
        else:
            templates = list(dict.fromkeys(check_template(t) for t in ([template] if isinstance(template, str)
                                                                       else template)))
        classes = list(dict.fromkeys(c.strip() for c in (classes if classes is not None else self.classes)
                                     if c.strip()))
        if not classes:
            raise ValueError("Give at least one class name.")
        trained = self.trained_templates
        emb, _ = encode_templates(self.text_encoder, classes, templates)                  # [K, T, d]
        per_template = list(emb.float().unbind(1))
        if method != "raw" and not set(templates) <= set(trained):
            base = (encode_classes(self.text_encoder, classes, trained)[0].float()       # [K, d], as in training
                    if method.endswith("transfer") else None)
            basis = self.contrast_basis(multiple) if method.startswith("project") else None
            per_template = [a if t in trained else adapt_wording(a, wording, base, basis)
                            for a, t in zip(per_template, templates)]
        text = F.normalize(torch.stack(per_template, 1).mean(1), dim=-1)
        return self.operate(Prompts(tuple(classes), tuple(templates), l2_normalise(text.numpy()),
                                    trained=self.own_prompts.trained))

    def contrast_basis(self, multiple: int = 1) -> torch.Tensor:
        """[r, d]: the trained classes' contrasts under the trained templates (``text.contrast_basis``
        with ``multiple``), computed on first use and kept. ValueError for a classifier baseline or
        ``multiple`` < 1."""
        if self.own_prompts.is_classifier:
            raise ValueError("This is a classifier-baseline model: it has no trained text contrasts.")
        if multiple < 1:
            raise ValueError(f"multiple must be at least 1, not {multiple}.")
        if multiple not in self._contrast_bases:   # two tabs at once may both compute it: the same tensor
            sets = encode_templates(self.text_encoder, list(self.own_prompts.trained), self.trained_templates)[0]
            self._contrast_bases[multiple] = contrast_basis(sets.float(), multiple)
        return self._contrast_bases[multiple]

    def operate(self, prompts: Prompts, balanced: bool | None = None, abstain: bool | None = None) -> Prompts:
        """``prompts`` under this model's stored operating point (``OperatingPoint.apply``): balanced
        and abstaining as asked (None: as this recogniser was loaded); changes nothing."""
        return self.operating.apply(prompts, self.balanced if balanced is None else balanced,
                                    self.abstain if abstain is None else abstain)

    def set_prompts(self, template: str | list[str] | None = None, classes: list[str] | None = None,
                    wording: str = DEFAULT_WORDING) -> None:
        """Re-prompt this recogniser (see ``encode_prompts``)."""
        self.prompts = self.encode_prompts(template, classes, wording)

    def reset_prompts(self) -> None:
        """Back to the checkpoint's own classes, templates and text embeddings."""
        self.prompts = self.own_prompts

    def analyze(self, image, prompts: Prompts | None = None) -> list:
        """Every face in one image (a path, PIL image or array): a list of ``analysis.FaceResult``
        (box and landmarks in the image's own pixels, crop, probabilities, cosines, embedding,
        label), largest first."""
        from .analysis import ImageAnalyzer

        if self._image_analyzer is None:
            self._image_analyzer = ImageAnalyzer(self)
        return self._image_analyzer.analyze(image, prompts)


def _require_onnxruntime() -> None:
    if not backends.onnx_available():
        raise ImportError("backend='onnx' needs ONNX Runtime: pip install onnxruntime (its CPU wheel), or use "
                          "backend='torch'.")


def load(path: str | Path | None = None, device: str = "cpu", flip: bool = False,
         backend: str = "auto", balanced: bool = True, abstain: bool = True) -> Recognizer:
    """A Recognizer from a checkpoint (.safetensors or exported .onnx), a run directory, or a model
    name in ``assets/`` (``None``: the default model).

    backend: "torch", "onnx" (ONNX Runtime, CPU; a .safetensors checkpoint is exported once and
    cached) or "auto" (ONNX Runtime on the CPU when it is installed, else torch).
    flip: average each face with its mirror image (twice the cost).
    balanced: apply the checkpoint's stored balance strength (prior correction, ``kefer.operating``);
    abstain: answer "uncertain" below its stored margin. Each is a no-op (logged) where the
    checkpoint stores none; False: raw scores, always an answer.
    """
    return Recognizer.from_checkpoint(path, device, flip, backend, balanced, abstain)
