"""Ship a trained model: copy a run's best checkpoint as fp16 safetensors (e.g. into assets/),
or as an ONNX file for ONNX Runtime (``.onnx``: fp32, dynamic batch axis), with its
validation/test metrics and the command that trained it added to the metadata.
``--evaluate`` replaces the run's metrics with those of the written file.

    kefer export runs/cpu-ferplus-full assets/mine.safetensors --evaluate \
        --command "python train.py --dataset ferplus --preset cpu --output runs/cpu-ferplus-full"
    kefer export accurate accurate.onnx          # a shipped model, or a run, as ONNX
"""
from __future__ import annotations

import json
from pathlib import Path

from ..backend import export_onnx, update_file_meta
from ..checkpoint import load_model, save_model
from ..io import sha256
from .quantize import calibration_images, quantize_model
from ..recognizer import load, resolve_checkpoint
from .evaluate import evaluate as measure


def export(run: str | Path, dest: str | Path, command: str | None = None, half: bool = True,
           evaluate: bool = False, int8: bool = False) -> Path:
    """Write ``run``'s best checkpoint to ``dest`` (.safetensors, or .onnx; ``int8``: quantised,
    see ``kefer.quantize``); returns ``dest``. ``evaluate``: measure the written file on the run's
    dataset (validation and test splits) and store those metrics."""
    src = resolve_checkpoint(run)
    if src.suffix != ".safetensors":
        raise ValueError(f"{src.name}: export from a run or a .safetensors checkpoint, not an {src.suffix} file.")
    dest = Path(dest)
    if dest.suffix not in (".safetensors", ".onnx"):
        raise ValueError(f"{dest.name}: write a .safetensors or an .onnx file.")
    if int8 and dest.suffix != ".onnx":
        raise ValueError("--int8 writes an ONNX model: give a .onnx destination.")
    state, meta = load_model(src)
    metrics_file = src.parent / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        meta["metrics"] = {k: metrics[k] for k in ("val_accuracy", "test_accuracy", "test_mean_accuracy") if k in metrics}
    if command:
        meta["train_command"] = command
    if int8 and not evaluate:
        meta.pop("metrics", None)   # the source's metrics are not this file's
    cfg = meta["config"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix == ".safetensors":
        save_model(dest, state, meta, half=half)
    else:
        torch_rec = load(src, backend="torch")
        if int8:
            images = calibration_images(torch_rec, cfg["dataset"], cfg["data_root"], cfg["classes"])
            quantize_model(torch_rec.model, meta, dest, images, sha256(src))
        else:
            export_onnx(torch_rec.model, meta, dest, sha256(src))
    if evaluate:
        record_metrics(dest)
    return dest


def record_metrics(path: str | Path) -> dict:
    """Measure the model file at ``path`` as ``kefer.load`` gives it (its stored operating point
    applied) on its training dataset's validation and test splits, and store those metrics in it."""
    rec = load(path)
    cfg = rec.meta["config"]
    val, test = (measure(rec, cfg["dataset"], cfg["data_root"], classes=cfg["classes"], split=s) for s in ("val", "test"))
    metrics = {"val_accuracy": val["val_accuracy"], "val_mean_accuracy": val["val_mean_accuracy"],
               "test_accuracy": test["test_accuracy"], "test_mean_accuracy": test["test_mean_accuracy"],
               "measured_on": "this file", "operating_point": rec.summary}
    update_file_meta(path, {"metrics": metrics})
    return metrics
