"""Test a recognizer on a dataset split, also across datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import scoring, viz
from ..data import build_dataset
from ..metrics import classification_metrics
from tqdm import tqdm

from . import distributed as dist
from .loop import make_loader


def evaluate(recognizer, dataset: str, data_root=None, plots_dir: str | Path | None = None,
             classes: list[str] | None = None, split: str = "test", flip: bool | None = None,
             logit_adjust: float = 0.0) -> dict:
    """``recognizer``'s accuracy on ``split`` of ``dataset``: keys ``<split>_accuracy`` and
    ``<split>_mean_accuracy`` (e.g. ``test_accuracy``), ``per_class_accuracy``, ``confusion_matrix``
    (rows true, columns predicted), ``classes``, ``n``.

    Dataset classes are matched to the model's by name; predictions are restricted to the shared
    classes (e.g. FER+ 8 -> CK+ 7). Writes confusion_matrix.png and tsne.png into ``plots_dir``.
    ``flip``: test-time augmentation, each face averaged with its mirror image (twice the cost);
    None: the recogniser's own setting. ``logit_adjust``: scores adjusted by that strength
    against the model's training class frequencies (``scoring.logit_adjust``; 0: none).
    Faces run through the recogniser's own backend (torch or ONNX Runtime, e.g. an int8 model);
    under torchrun each process scores its share and the results are gathered.
    """
    data = build_dataset(dataset, data_root, split, recognizer.transform, classes=classes)
    missing = [c for c in data.classes if c not in recognizer.classes]
    if missing:
        raise ValueError(f"The model has no class(es) {missing} of {dataset}; it knows {recognizer.classes}.")
    idx = torch.tensor([recognizer.classes.index(c) for c in data.classes])
    device = getattr(recognizer.backend, "device", torch.device("cpu"))   # where a torch backend runs
    feats = [torch.zeros(0, recognizer.own_prompts.anchors.shape[1])]      # a process may get no sample
    labels = [torch.zeros(0, dtype=torch.long)]
    for x, y in tqdm(make_loader(data, 128, False, device, None), desc=split, leave=False, mininterval=2,
                     disable=not dist.is_main()):
        feats.append(torch.from_numpy(recognizer.represent(x, flip)))
        labels.append(y)
    feats, labels = (dist.gather(torch.cat(t)) for t in (feats, labels))
    probs = recognizer.score(feats.numpy())[1]   # against its current prompts
    if logit_adjust:
        probs = scoring.logit_adjust(probs, training_prior(recognizer), logit_adjust)
    probs = torch.from_numpy(probs)
    pred = probs[:, idx].argmax(1)
    m = classification_metrics(labels.numpy(), pred.numpy(), data.classes)
    out = {
        "dataset": dataset, "split": split,
        f"{split}_accuracy": m["accuracy"], f"{split}_mean_accuracy": m["mean_accuracy"],
        "per_class_accuracy": m["per_class_accuracy"], "confusion_matrix": m["confusion_matrix"],
        "classes": data.classes, "n": m["n"], "skipped_images": len(data.skipped),
        "flip": recognizer.flip if flip is None else flip, "logit_adjust": logit_adjust,
    }
    if plots_dir is not None:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        title = f"{recognizer.name} on {dataset}/{split}"
        viz.plot_confusion(m["confusion_matrix"], data.classes, Path(plots_dir) / "confusion_matrix.png", title)
        prompts = recognizer.prompts
        viz.plot_tsne(feats, labels, prompts.anchors[idx], data.classes, Path(plots_dir) / "tsne.png", title,
                      anchor_kind="classifier weights" if prompts.is_classifier else "text anchors")
    return out


def training_prior(recognizer) -> np.ndarray:
    """Class frequencies [K] of the training split the model was trained on, in its class order."""
    cfg = recognizer.meta["config"]
    data = build_dataset(cfg["dataset"], cfg["data_root"], "train", None, classes=cfg["classes"])
    counts = np.bincount(data.targets, minlength=len(data.classes))
    freq = dict(zip(data.classes, counts / counts.sum()))
    missing = [c for c in recognizer.classes if not freq.get(c)]
    if missing:
        raise ValueError(f"No training images of {missing}: logit adjustment needs every class's frequency.")
    return np.array([freq[c] for c in recognizer.classes])
