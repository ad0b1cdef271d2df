"""Inference API: a trained model plus its text knowledge, for face crops and whole images.

    import kefer
    rec = kefer.load()                  # the default ("accurate") model in assets/; kefer.load("fast")
    rec = kefer.load("runs/x")          # or a run directory / checkpoint file / exported .onnx file
    rec = kefer.load("accurate", backend="torch")   # "auto" (default): ONNX Runtime on the CPU if installed
    probs = rec.predict([face])         # [N, K]
    faces = rec.analyze("group.jpg")    # every face: box, landmarks, crop, probabilities, label
    rec = kefer.load("accurate", flip=True)   # mirror-image test-time augmentation: twice the cost
    zs = rec.with_prompts(rec.encode_prompts(classes=[*rec.classes, "confusion"]))   # zero-shot: new text only
    rec = kefer.load("accurate", balanced=False, abstain=False)   # raw scores, never "uncertain"
"""
from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import backend as backends
from .checkpoint import load_model
from .analysis import ImageAnalyzer
from .models import KEFERModel, create_encoder, mirror_average
from .operating import OperatingPoint, describe
from .preprocess import eval_transform
from .reference import Reference
from .scoring import Prompts, l2_normalise, score
from .text import check_template, contrast_basis, encode_templates, project_wording
from .text_encoders import create_text_encoder

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
        self.trained_prompts = self.operate(Prompts(tuple(meta["classes"]), tuple(meta["templates"]), anchors, head,
                                                trained=tuple(meta["classes"])))
        self.prompts = self.trained_prompts
        self._shared = {"lock": threading.Lock(), "text_encoder": None, "bases": {}, "analyzer": None}

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

    def embed(self, faces, normalise: bool = True) -> np.ndarray:
        """Faces -> representations f [N, d] float32, L2-normalised unless ``normalise=False``.

        ``faces``: one face crop (PIL image, 2-D or 3-D uint8 array) or many (a list, or a 4-D uint8
        array), resized and normalised here; or a batch already preprocessed by ``transform``, float
        [N, 3, S, S] (numpy or torch). Each is averaged with its mirror image's where ``flip`` is set.
        """
        if isinstance(faces, torch.Tensor):
            faces = faces.cpu().numpy()
        if isinstance(faces, np.ndarray) and faces.ndim == 4 and faces.dtype != np.uint8:
            x = np.asarray(faces, np.float32)
        else:
            if isinstance(faces, Image.Image) or (isinstance(faces, np.ndarray) and faces.ndim in (2, 3)):
                faces = [faces]
            crops = [self.transform(as_rgb(f)) for f in faces]
            x = torch.stack(crops).numpy() if crops else np.zeros((0, 3, self.input_size, self.input_size), np.float32)
        f = (mirror_average(self.backend, x, self.flip) if len(x)
             else np.zeros((0, self.trained_prompts.anchors.shape[1]), np.float32))
        return l2_normalise(f) if normalise else f

    def score(self, embeddings: np.ndarray, prompts: Prompts | None = None,
              reference: Reference | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Representations [N, d] (``embed``) -> (cosines [N, K], probabilities [N, K]) against ``prompts``
        (default: this recogniser's); with a person's ``reference`` (``reference``), relative to
        their neutral face too (``scoring.score``)."""
        return score(embeddings, prompts or self.prompts, reference)

    def predict(self, faces, prompts: Prompts | None = None, reference: Reference | None = None) -> np.ndarray:
        """Face crops -> class probabilities [N, K] (``reference``: see ``score``)."""
        return self.score(self.embed(faces, normalise=False), prompts, reference)[1]

    def reference(self, neutral_faces) -> Reference:
        """Face crops of one person's neutral face (as ``embed`` takes them) -> their ``Reference``
        (embedding, spread, count), for ``predict``, ``score``, ``analyze`` and ``StreamAnalyzer``.
        It can be pickled or saved (``Reference.save``). ValueError for no face."""
        return Reference.from_embeddings(self.embed(neutral_faces))

    def analyze(self, image, prompts: Prompts | None = None, reference: Reference | None = None) -> list:
        """Every face in one image (a path, PIL image or array): a list of ``analysis.FaceResult``
        (box and landmarks in the image's own pixels, crop, probabilities, cosines, embedding,
        label), largest first; ``reference``: the person's neutral face, for every face found."""
        if self._shared["analyzer"] is None:   # its face detector is built once, for every copy
            self._shared["analyzer"] = ImageAnalyzer(self)
        return self._shared["analyzer"].analyze(image, prompts or self.prompts, reference=reference)

    @property
    def text_encoder(self):
        """The checkpoint's text encoder, loaded on first use (seconds) and kept."""
        with self._shared["lock"]:
            if self._shared["text_encoder"] is None:
                self._shared["text_encoder"] = create_text_encoder(self.meta["text_encoder"])
            return self._shared["text_encoder"]

    def encode_prompts(self, template: str | list[str] | None = None, classes: list[str] | None = None,
                       unseen: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Prompts:
        """New prompts from the checkpoint's text encoder (new classes are zero-shot); changes nothing.
        Several templates (repeats dropped) are averaged per class (normalise, mean, renormalise).

        A template the model was not trained on keeps its class deviations only along the trained
        class contrasts (``text.project_wording``: the measured default, docs/RESULTS.md 8d);
        ``unseen`` replaces that step, anchors [K, d] -> [K, d] (identity: the raw embeddings, as
        the paper scores them; ``kefer.lab.wordings`` has the other methods). A trained template is
        always taken as it is.

        Raises ValueError for a template without [CLS], no class names or a classifier baseline.
        """
        if self.trained_prompts.is_classifier:
            raise ValueError("This is a classifier-baseline model: it has no text knowledge to re-prompt.")
        if template is None:
            templates = self.templates
        else:
            templates = list(dict.fromkeys(check_template(t) for t in ([template] if isinstance(template, str)
                                                                       else template)))
        classes = list(dict.fromkeys(c.strip() for c in (classes if classes is not None else self.classes)
                                     if c.strip()))
        if not classes:
            raise ValueError("Give at least one class name.")
        if unseen is None:
            unseen = lambda anchors: project_wording(anchors, self._contrast_basis())  # noqa: E731
        trained = self.trained_prompts.templates
        emb, _ = encode_templates(self.text_encoder, classes, templates)                  # [K, T, d]
        per_template = [a if t in trained else unseen(a) for a, t in zip(emb.float().unbind(1), templates)]
        text = F.normalize(torch.stack(per_template, 1).mean(1), dim=-1)
        return self.operate(Prompts(tuple(classes), tuple(templates), l2_normalise(text.numpy()),
                                    trained=self.trained_prompts.trained))

    def with_prompts(self, prompts: Prompts) -> "Recognizer":
        """A recogniser that scores against ``prompts`` (``encode_prompts``, or ``trained_prompts``),
        sharing this one's network and text encoder; this one is unchanged."""
        other = copy.copy(self)
        other.prompts = prompts
        return other

    def operate(self, prompts: Prompts, balanced: bool | None = None, abstain: bool | None = None) -> Prompts:
        """``prompts`` under this model's stored operating point (``OperatingPoint.apply``): balanced
        and abstaining as asked (None: as this recogniser was loaded); changes nothing."""
        return self.operating.apply(prompts, self.balanced if balanced is None else balanced,
                                    self.abstain if abstain is None else abstain)

    def _contrast_basis(self, multiple: int = 1) -> torch.Tensor:
        """[r, d]: the trained classes' contrasts under the trained templates (``text.contrast_basis``;
        ``multiple`` x (K0 - 1) directions at most), computed on first use and kept for this
        recogniser and its copies (two tabs may both compute it)."""
        bases = self._shared["bases"]
        if multiple not in bases:
            sets = encode_templates(self.text_encoder, list(self.trained_prompts.trained),
                                    list(self.trained_prompts.templates))[0]
            bases[multiple] = contrast_basis(sets.float(), multiple)
        return bases[multiple]


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
        return Recognizer(meta, backends.OnnxBackend(path, quantised="quantization" in meta), extra, name, flip,
                          balanced=balanced, abstain=abstain)
    state, meta = load_model(path)
    encoder = create_encoder(meta["encoder"], meta["img_size"], pretrained=False, **meta["encoder_kwargs"])
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
    return Recognizer(meta, runner, extra, name, flip, model=model, balanced=balanced, abstain=abstain)
