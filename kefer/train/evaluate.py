"""Test a recognizer on a dataset split, also across datasets."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch

from .. import viz
from .data import build_dataset
from .metrics import classification_metrics, per_class_auc
from ..operating import class_prior, margins
from tqdm import tqdm

from . import distributed as dist
from .loop import make_loader


def split_features(recognizer, dataset: str, data_root=None, split: str = "test", classes: list[str] | None = None,
                   flip: bool | None = None):
    """(dataset, representations f [N, d], labels [N], model index of each dataset class [C]) of
    ``split``, run through the recogniser's own backend (torch or ONNX Runtime, e.g. an int8 model);
    under torchrun each process embeds its share and the results are gathered.

    Dataset classes are matched to the model's by name; raises ValueError for one it lacks.
    ``flip``: each face averaged with its mirror image (None: the recogniser's own setting).
    """
    if flip is not None and flip != recognizer.flip:
        recognizer = copy.copy(recognizer)
        recognizer.flip = flip
    data = build_dataset(dataset, data_root, split, recognizer.transform, classes=classes)
    missing = [c for c in data.classes if c not in recognizer.classes]
    if missing:
        raise ValueError(f"The model has no class(es) {missing} of {dataset}; it knows {recognizer.classes}.")
    idx = torch.tensor([recognizer.classes.index(c) for c in data.classes])
    device = getattr(recognizer.backend, "device", torch.device("cpu"))   # where a torch backend runs
    feats = [torch.zeros(0, recognizer.trained_prompts.anchors.shape[1])]      # a process may get no sample
    labels = [torch.zeros(0, dtype=torch.long)]
    for x, y in tqdm(make_loader(data, 128, False, device, None), desc=split, leave=False, mininterval=2,
                     disable=not dist.is_main()):
        feats.append(torch.from_numpy(recognizer.embed(x, normalise=False)))
        labels.append(y)
    feats, labels = (dist.gather(torch.cat(t)) for t in (feats, labels))
    return data, feats, labels, idx


def evaluate(recognizer, dataset: str, data_root=None, plots_dir: str | Path | None = None,
             classes: list[str] | None = None, split: str = "test", flip: bool | None = None,
             logit_adjust: float | None = None) -> dict:
    """``recognizer``'s accuracy on ``split`` of ``dataset``: keys ``<split>_accuracy`` and
    ``<split>_mean_accuracy`` (e.g. ``test_accuracy``; the argmax over all faces), ``per_class_accuracy``,
    ``per_class_auc`` (one-vs-rest ROC AUC of each face's cosine to a class's anchor: does the
    anchor rank its own faces first, argmax or not; 0.5 is chance),
    ``confusion_matrix`` (rows true, columns predicted), ``classes``, ``n``, ``logit_adjust`` (the
    balance strength used); where its prompts abstain, also ``abstain_margin``, ``<split>_coverage``
    (the fraction of faces answered) and ``<split>_answered_accuracy`` (accuracy on those).

    Scored against the recogniser's current prompts and operating point (``kefer.operating``);
    ``logit_adjust`` A overrides the balance strength (0: raw scores), against the stored training
    class frequencies or, where none are stored, ``training_prior``. Predictions are restricted to
    the dataset's classes (e.g. FER+ 8 -> CK+ 7); see ``split_features`` for the rest. Writes
    confusion_matrix.png and tsne.png into ``plots_dir``.
    """
    data, feats, labels, idx = split_features(recognizer, dataset, data_root, split, classes, flip)
    prompts = recognizer.prompts
    if logit_adjust is not None:
        point = recognizer.operating
        if not point.prior:
            point = replace(point, prior=training_prior(recognizer))
        prompts = point.balance(prompts, logit_adjust)
    cos, probs = recognizer.score(feats.numpy(), prompts)
    probs = torch.from_numpy(probs)
    pred = probs[:, idx].argmax(1)
    m = classification_metrics(labels.numpy(), pred.numpy(), data.classes)
    out = {
        "dataset": dataset, "split": split,
        f"{split}_accuracy": m["accuracy"], f"{split}_mean_accuracy": m["mean_accuracy"],
        "per_class_accuracy": m["per_class_accuracy"], "confusion_matrix": m["confusion_matrix"],
        "per_class_auc": per_class_auc(labels.numpy(), cos[:, idx.numpy()], data.classes),
        "classes": data.classes, "n": m["n"], "skipped_images": len(data.skipped),
        "flip": recognizer.flip if flip is None else flip, "logit_adjust": prompts.strength,
    }
    if prompts.abstain_margin is not None:
        answered = margins(probs.numpy()) >= prompts.abstain_margin
        right = (pred == labels).numpy()
        out.update({"abstain_margin": prompts.abstain_margin, f"{split}_coverage": float(answered.mean()),
                    f"{split}_answered_accuracy": float(right[answered].mean()) if answered.any() else None})
    if plots_dir is not None:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        title = f"{recognizer.name} on {dataset}/{split}"
        viz.plot_confusion(m["confusion_matrix"], data.classes, Path(plots_dir) / "confusion_matrix.png", title)
        viz.plot_tsne(feats, labels, prompts.anchors[idx], data.classes, Path(plots_dir) / "tsne.png", title,
                      anchor_kind="classifier weights" if prompts.is_classifier else "text anchors")
    return out


def training_prior(recognizer) -> dict:
    """The class prior {class: probability} of the training split the model was trained on (for a
    checkpoint that does not store it; ``operating.class_prior``)."""
    cfg = recognizer.meta["config"]
    data = build_dataset(cfg["dataset"], cfg["data_root"], "train", None, classes=cfg["classes"])
    return class_prior(data.targets, data.classes, cfg.get("balance", "none"))
