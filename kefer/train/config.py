"""Run configuration as data: one dataclass, named presets, saved as JSON beside every run.

The fields define train.py's flags: a field with ``flag(...)`` metadata is a flag named after it
(``img_size`` -> ``--img-size``; a bool that defaults to True -> ``--no-<name>``), typed by its
annotation (nanoGPT's rule: the config's own fields define the overrides), and listed by ``--help``
under its ``group`` (one of ``FLAG_GROUPS``, which every flag must name).
"""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..options import parse_kv
from ..text import DEFAULT_TEMPLATE
from .template_sets import expand_templates


def parse_weights(text: str) -> dict[str, float]:
    """'t=0.5,sc=2' -> {'t': 0.5, 'sc': 2.0}"""
    return parse_kv(text, float)


def parse_list(text: str) -> list[str]:
    """'neutral, anger' -> ['neutral', 'anger']"""
    return [c.strip() for c in text.split(",")]


# The sections of ``kefer train --help``, in order: every flag names one with ``group=``.
FLAG_GROUPS = {
    "data": "what to train on",
    "model": "the image encoder and the text knowledge it is trained against",
    "losses": "the loss terms and their weights",
    "schedule": "epochs, batch size, learning rate, seed, time budget",
    "augmentation": "training-image augmentation",
    "device": "where and how fast it runs",
    "output": "what the run writes besides the model",
}


def flag(help: str | None = None, *, group: str, **argparse_kwargs) -> dict:
    """Field metadata that makes the field a train.py flag shown under ``group`` (a key of
    ``FLAG_GROUPS``); ``argparse_kwargs`` (``name``, ``choices``, ``type``, ``action``,
    ``metavar``) refine what the annotation implies."""
    if group not in FLAG_GROUPS:
        raise ValueError(f"Unknown flag group {group!r}; choose one of {list(FLAG_GROUPS)}.")
    return {"flag": {"help": help, **argparse_kwargs}, "group": group}


@dataclass
class Config:
    # data
    dataset: str = field(default="ferplus", metadata=flag(
        "ferplus, rafdb, affectnet7, affectnet8, ckplus-original (with :fold=k/n), folder; options after a "
        "colon, e.g. rafdb:val=0.2,images=original", group="data"))
    data_root: str | None = field(default=None, metadata=flag(
        "default: $KEFER_DATA/<dataset>, else ../shared/data/<dataset>", group="data"))
    classes: list[str] | None = field(default=None, metadata=flag(   # None: the dataset's own classes
        "comma-separated class names to keep, in order", type=parse_list, group="data"))
    max_train_samples: int | None = field(default=None, metadata=flag(group="data"))
    balance: str = field(default="none", metadata=flag(
        "oversample: draw training images class-balanced (the paper's AffectNet recipe); the model then stores a "
        "uniform class prior, so post-hoc balance leaves it as it is",
        choices=["none", "oversample"], group="data"))
    ce_adjust: float = field(default=0.0, metadata=flag(
        "logit-adjusted cross-entropy (Menon et al., ICLR 2021): add A * log(training class frequency) to the "
        "logits of L_ce (and of the classifier baseline); 1 is the balanced softmax, 0 the paper", metavar="A", group="losses"))
    labels: str = field(default="majority", metadata=flag(
        "FER+ training targets: majority labels (the paper) or the 10 annotators' vote distribution for the "
        "cross-entropy term; validation and test stay majority-labelled", choices=["majority", "votes"], group="data"))
    # model
    encoder: str = field(default="resnet18", metadata=flag(
        "timm model name (resnet18, swin_tiny_patch4_window7_224, vit_base_patch16_224, ...), a kefer "
        "pretrained encoder (facenet-casia, msceleb-resnet18, msceleb-swin-t, ...), timm:<model>.<tag> (timm's "
        "published weights) or clip:<model>/<tag|file> (a CLIP image tower)", group="model"))
    encoder_weights: str | None = field(default=None, metadata=flag("a state-dict file for the encoder", group="model"))
    init: str | None = field(default=None, metadata=flag(
        "fine-tune a trained kefer model: a run dir, a .safetensors file or a shipped model (e.g. accurate); "
        "the run takes its encoder, text encoder, input size, normalisation and templates, and the fine-tuning "
        "schedule (kefer.train.finetune), unless flags say otherwise", group="model"))
    encoder_kwargs: dict = field(default_factory=dict)
    img_size: int = field(default=224, metadata=flag(group="model"))
    batchnorm: str = field(default="auto", metadata=flag(
        "BatchNorm of a kefer pretrained encoder while training: auto (frozen where the statistics were "
        "folded, e.g. facenet-casia), frozen (eval mode), or train (batch statistics)",
        choices=["auto", "frozen", "train"], group="model"))
    # knowledge
    text_encoder: str = field(default="auto", metadata=flag("auto, minilm, mpnet, orthogonal, or clip:<model>/<tag|file|random>", group="model"))
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE], metadata=flag(
        "prompt template with [CLS]; repeat to average several; 'paper' = the paper's 9, 'wide' = those "
        "and 20 more (kefer.train.template_sets.WIDE_TEMPLATES)", name="template", action="append", then=expand_templates, group="model"))
    template_sampling: str = field(default="mean", metadata=flag(
        "mean: train against the --template embeddings averaged per class (METHOD.md); batch: text "
        "augmentation, one of them drawn at random for each training batch; worst: text augmentation, each batch "
        "trained against the one on which its loss is highest; inference uses the mean in every case",
        choices=["mean", "batch", "worst"], group="model"))
    class_names: str = field(default="own", metadata=flag(
        "own: the dataset's class names; variants: text augmentation also draws the form of the class names for "
        "each batch, the dataset's (happiness) or their adjectives (happy); needs --template-sampling batch or worst; "
        "inference uses the dataset's",
        choices=["own", "variants"], group="model"))
    # losses: a Table 2 row, e.g. "classifier", "ce", "ce,t", "ce,sc", "ce,t,sc", "ce,t,infonce"
    losses: str = field(default="ce,t,sc", metadata=flag("classifier | ce | ce,t | ce,sc | ce,t,sc | ce,t,infonce", group="losses"))
    lambdas: dict = field(default_factory=dict, metadata=flag(   # unnamed terms weigh 1
        "loss weights, e.g. 'ce=1,t=1,sc=1'", type=parse_weights, group="losses"))
    sc_form: str = field(default="per-sample", metadata=flag(choices=["per-sample", "pairwise"], group="losses"))
    # optimisation (the paper's recipe)
    epochs: int = field(default=50, metadata=flag(group="schedule"))
    batch_size: int = field(default=64, metadata=flag(group="schedule"))
    lr: float = field(default=2e-3, metadata=flag(group="schedule"))
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-4
    # augmentation: the recipe's by default; the other options target faces that are not FER+ crops
    rotation: float = field(default=10.0, metadata=flag("degrees of random rotation", group="augmentation"))
    crop_area: float | None = field(default=None, metadata=flag(
        "RandomResizedCrop(scale=(S, 1)), a crop of S to all of the image's area, in place of the recipe's padded "
        "RandomCrop (the app's face crop_scale is another thing: the detector box's side)", metavar="S", group="augmentation"))
    auto_augment: str = field(default="none", metadata=flag(
        "add torchvision's TrivialAugmentWide or RandAugment", choices=["none", "trivial", "randaugment"], group="augmentation"))
    erasing: float = field(default=0.5, metadata=flag("probability of random erasing", metavar="P", group="augmentation"))
    blur: float = field(default=0.0, metadata=flag("probability of a Gaussian blur", metavar="P", group="augmentation"))
    # machinery
    seed: int = field(default=0, metadata=flag(group="schedule"))
    device: str = field(default="auto", metadata=flag("auto, cpu, cuda, cuda:1, ...", group="device"))
    workers: int | None = field(default=None, metadata=flag(group="device"))   # None: 0 on CPU, min(8, cores) on CUDA
    amp: bool = field(default=True, metadata=flag(group="device"))             # only takes effect on CUDA
    compile: bool = field(default=False, metadata=flag("torch.compile the encoder", group="device"))
    select: str = field(default="accuracy", metadata=flag(
        "the validation figure that selects the best epoch: overall accuracy (the paper) or the mean per-class "
        "accuracy (the fine-tuning default: small, imbalanced data)", choices=["accuracy", "mean_accuracy"],
        group="schedule"))
    time_budget: float | None = field(default=None, metadata=flag(
        "cut the epochs after warm-up so the run ends within this many minutes", metavar="MINUTES", group="schedule"))
    plots: bool = field(default=True, metadata=flag(
        "skip the test confusion matrix and t-SNE (the t-SNE takes ~30 s on a CPU)", group="output"))
    test: bool = field(default=True, metadata=flag(
        "skip the final test evaluation (when settings are being chosen on validation)", group="output"))

    @property
    def loss_terms(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.losses.split(",") if t.strip())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """The config of a saved dict (config.json, a checkpoint's metadata); ValueError naming any
        key that is not a field."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"Unknown config key(s) {unknown}; a Config has {[f.name for f in fields(cls)]}.")
        return cls(**d)

    def differences(self, other: Config) -> dict[str, tuple[Any, Any]]:
        """{field: (this value, other's)} where the two configs differ."""
        return {f.name: (getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``Config`` field with ``flag`` metadata; unset flags stay None (no override)."""
    hints = typing.get_type_hints(Config)
    groups = {name: parser.add_argument_group(name, description) for name, description in FLAG_GROUPS.items()}
    for f in fields(Config):
        if "flag" not in f.metadata:
            continue
        if f.metadata.get("group") not in groups:
            raise ValueError(f"Config.{f.name} is a flag with no group of {list(FLAG_GROUPS)}.")
        group = groups[f.metadata["group"]]
        spec = {k: v for k, v in f.metadata["flag"].items() if k != "then"}
        name = spec.pop("name", f.name).replace("_", "-")
        kind = hints[f.name]
        if kind is bool:
            default_on = f.default is not MISSING and f.default
            group.add_argument(f"--no-{name}" if default_on else f"--{name}", dest=f.name, default=None,
                               action="store_false" if default_on else "store_true", **spec)
            continue
        spec.setdefault("metavar", name.upper().replace("-", "_"))
        base = next((t for t in (int, float, str) if t is kind or t in typing.get_args(kind)), None)
        if "type" not in spec and "action" not in spec and base is not str:
            spec["type"] = base
        group.add_argument(f"--{name}", dest=f.name, **spec)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Config`` fields set by flags added with ``add_flags``, converted."""
    out = {}
    for f in fields(Config):
        value = getattr(args, f.name, None)
        if "flag" in f.metadata and value is not None:
            then = f.metadata["flag"].get("then")
            out[f.name] = then(value) if then else value
    return out


PRESETS = {
    # ResNet-18 at 224 px, 50 epochs: the paper's recipe as published.
    "paper-r18": Config(encoder="resnet18", img_size=224),
    # Swin-T at 112 px; patch size 2 keeps the 56/28/14/7 stage grid of the 224-px model.
    "paper-swin": Config(encoder="swin_tiny_patch4_window7_224", img_size=112,
                         encoder_kwargs={"patch_size": 2}),
    # About an hour for a full FER+ run on 2 CPU cores: small input, fewer epochs, and a larger
    # learning rate because the encoder starts from scratch (no face pre-training is available).
    "cpu": Config(encoder="resnet18", img_size=64, epochs=12, lr=0.02, text_encoder="minilm"),
}


def preset(name: str, **overrides) -> Config:
    """A named preset with some fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return replace(PRESETS[name], **overrides)
