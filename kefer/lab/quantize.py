"""Calibration rules for int8 quantisation compared on validation (``kefer lab quantize``)."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ..io import atomic_write
from ..recognizer import load
from ..train.evaluate import evaluate
from ..train.quantize import CALIBRATION_METHODS, calibration_images, quantize_model

log = logging.getLogger(__name__)


def compare(name: str, rules: list[str]) -> list[dict]:
    """FER+ (or the model's own dataset) validation accuracy of the fp32 ONNX model and of an int8
    file per calibration rule; the test split is not read."""
    rec = load(name, backend="torch")
    cfg = rec.meta["config"]
    images = calibration_images(rec, cfg["dataset"], cfg["data_root"], cfg["classes"])
    rows = [{"model": f"{rec.name} fp32 (onnxruntime)",
             **val_metrics(evaluate(load(name, backend="onnx"), cfg["dataset"], cfg["data_root"],
                                    classes=cfg["classes"], split="val"))}]
    with tempfile.TemporaryDirectory() as tmp:
        for rule in rules:
            path = quantize_model(rec.model, rec.meta, Path(tmp) / f"{rule}.onnx", images, rule=rule)
            metrics = evaluate(load(path), cfg["dataset"], cfg["data_root"], classes=cfg["classes"], split="val")
            rows.append({"model": f"{rec.name} int8, {rule} calibration", **val_metrics(metrics)})
            log.info("%s", rows[-1])
    return rows


def val_metrics(metrics: dict) -> dict:
    return {"val_accuracy": round(100 * metrics["val_accuracy"], 2),
            "val_mean_accuracy": round(100 * metrics["val_mean_accuracy"], 2)}


def main(argv=None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="kefer lab quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a shipped model name, run dir or .safetensors checkpoint")
    p.add_argument("--compare", nargs="+", default=list(CALIBRATION_METHODS), choices=CALIBRATION_METHODS,
                   help="calibration rules to compare on the validation split")
    p.add_argument("--out", required=True, help="write one JSON line per model to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = compare(args.model, args.compare)
    atomic_write(args.out, lambda tmp: tmp.write_text("".join(json.dumps(row) + "\n" for row in rows)))
    return 0

