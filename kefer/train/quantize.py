"""int8 ONNX models: static post-training quantisation with ONNX Runtime.

The method: QDQ format, int8 weights per output channel (each conv filter its own scale, which
matters for the folded-BatchNorm FaceNet convolutions whose filters differ widely in range), uint8
activations per tensor (asymmetric; ONNX Runtime's fast U8S8 kernels on x86, 2.6x faster here than
int8 activations at the same accuracy) with ranges calibrated on 512 seeded FER+ *training* faces
(never validation or test), after ONNX Runtime's pre-processing (shape inference, graph
optimisation).
Every layer is quantised. The calibration rule (MinMax by default; Entropy, Percentile) is
compared on the validation split only by

    kefer lab quantize accurate --compare MinMax Percentile Entropy --out calibration-val.jsonl

and the chosen file is written, with its validation and test accuracy, by

    kefer export accurate assets/accurate-int8.onnx --int8 --evaluate
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..backend import export_onnx
from ..io import atomic_write

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 512
CALIBRATION_SEED = 0
CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")


def method(calibration: str = "MinMax") -> dict:
    """The quantisation recipe, as stored in the written file's metadata. Weights use 7 of their 8
    bits (ONNX Runtime's ``reduce_range``): on x86 CPUs without VNNI (e.g. AMD EPYC Zen 2/3) the
    uint8 x int8 kernels add pairs of products in int16, which full-range weights overflow; the
    first shipped int8 file lost 2-3.5 points of accuracy on such a CPU."""
    return {"format": "QDQ", "weights": "int8 per channel, 7-bit range", "activations": "uint8 per tensor",
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
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                        calibrate_method=getattr(CalibrationMethod, rule))
        atomic_write(dest, lambda tmp: shutil.copyfile(out, tmp))
    return dest


