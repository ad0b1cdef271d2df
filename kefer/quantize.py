"""int8 ONNX models: static post-training quantisation with ONNX Runtime.

The method: QDQ format, int8 weights per output channel (each conv filter its own scale, which
matters for the folded-BatchNorm FaceNet convolutions whose filters differ widely in range), uint8
activations per tensor (asymmetric; ONNX Runtime's fast U8S8 kernels on x86, 2.6x faster here than
int8 activations at the same accuracy) with ranges calibrated on 512 seeded FER+ *training* faces
(never validation or test), after ONNX Runtime's pre-processing (shape inference, graph
optimisation).
Every layer is quantised. The calibration rule (MinMax by default; Entropy, Percentile) is
compared on the validation split only by

    python -m kefer.quantize accurate --compare MinMax Percentile Entropy --out calibration-val.jsonl

and the chosen file is written, with its validation and test accuracy, by

    python -m kefer.export accurate assets/accurate-int8.onnx --int8 --evaluate
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .backend import export_onnx
from .io import atomic_write

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 512
CALIBRATION_SEED = 0
CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")


def method(calibration: str = "MinMax") -> dict:
    """The quantisation recipe, as stored in the written file's metadata."""
    return {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
            "calibration": calibration, "calibration_images": CALIBRATION_IMAGES, "calibration_split": "train",
            "calibration_seed": CALIBRATION_SEED}


def calibration_images(recognizer, dataset: str, data_root, classes=None, n: int = CALIBRATION_IMAGES,
                       seed: int = CALIBRATION_SEED) -> np.ndarray:
    """``n`` seeded training images of ``dataset``, preprocessed as at inference: [n, 3, S, S] float32."""
    from .data import build_dataset

    data = build_dataset(dataset, data_root, "train", recognizer.transform, classes=classes)
    pick = np.random.default_rng(seed).choice(len(data), min(n, len(data)), replace=False)
    return np.stack([data[int(i)][0].numpy() for i in pick])


def quantize_model(model, meta: dict, dest: str | Path, calibration: np.ndarray, source_sha256: str = "",
                   rule: str = "MinMax") -> Path:
    """Write the int8 ONNX model of ``model`` (a KEFERModel) to ``dest``, its activation ranges
    calibrated on ``calibration`` [n, 3, S, S] by ``rule`` (a CALIBRATION_METHODS name); the kefer
    metadata travels with it, plus ``quantization``: the recipe."""
    if rule not in CALIBRATION_METHODS:
        raise ValueError(f"calibration must be one of {CALIBRATION_METHODS}, not {rule!r}")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i:i + 32] for i in range(0, len(calibration), 32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, {**meta, "quantization": method(rule)}, fp32, source_sha256)
        quant_pre_process(str(fp32), str(pre))
        log.info("calibrating int8 ranges on %d images", len(calibration))
        quantize_static(str(pre), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, rule))
        atomic_write(dest, lambda tmp: shutil.copyfile(out, tmp))
    return dest


def compare(name: str, rules: list[str]) -> list[dict]:
    """FER+ (or the model's own dataset) validation accuracy of the fp32 ONNX model and of an int8
    file per calibration rule; the test split is not read."""
    from . import load
    from .train.evaluate import evaluate

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

    p = argparse.ArgumentParser(prog="python -m kefer.quantize", description=__doc__,
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


if __name__ == "__main__":
    raise SystemExit(main())
