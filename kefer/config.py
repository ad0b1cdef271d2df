"""Run configuration as data: one dataclass, named presets, saved as JSON beside every run."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .text import DEFAULT_TEMPLATE


@dataclass
class Config:
    # data
    dataset: str = "ferplus"
    data_root: str | None = None
    classes: list[str] | None = None      # None: the dataset's own classes
    max_train_samples: int | None = None
    balance: str = "none"                 # "oversample": class-balanced sampling of training images
    labels: str = "majority"              # "votes": FER+ training targets are the annotator vote distributions
    # model
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    init: str | None = None               # start from a kefer checkpoint (file, run dir or shipped model name)
    encoder_kwargs: dict = field(default_factory=dict)
    img_size: int = 224
    batchnorm: str = "auto"               # kefer pretrained encoders: "auto" (the registry's), "frozen", "train"
    # knowledge
    text_encoder: str = "auto"
    templates: list[str] = field(default_factory=lambda: [DEFAULT_TEMPLATE])
    # losses: a Table 2 row, e.g. "classifier", "ce", "ce,t", "ce,sc", "ce,t,sc", "ce,t,infonce"
    losses: str = "ce,t,sc"
    lambdas: dict = field(default_factory=dict)   # e.g. {"t": 0.5}; unnamed terms weigh 1
    sc_form: str = "per-sample"
    # optimisation (the paper's recipe)
    epochs: int = 50
    batch_size: int = 64
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-4
    rotation: float = 10.0
    # machinery
    seed: int = 0
    device: str = "auto"
    workers: int | None = None            # None: 0 on CPU, min(8, cores) on CUDA
    amp: bool = True                      # only takes effect on CUDA
    compile: bool = False                 # torch.compile the encoder (worth it on GPUs)
    time_budget: float | None = None      # minutes; after the warm-up epoch, epochs are cut to fit
    plots: bool = True                    # confusion matrix and t-SNE of the test set (t-SNE takes ~30 s)

    @property
    def loss_terms(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.losses.split(",") if t.strip())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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
