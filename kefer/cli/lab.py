"""``kefer lab``: the research tools, apart from the product (``kefer.lab``)."""
from __future__ import annotations

from . import dispatch

COMMANDS = {
    "experiments": ("kefer.cli.experiments", "train and report the reproduction experiments (docs/RESULTS.md)"),
    "templates": ("kefer.lab.templates", "score a model with each prompt template alone, and choose wording methods"),
    "operating": ("kefer.lab.operating", "choose a model's operating point (balance, abstain) on validation"),
    "temperature": ("kefer.lab.temperature",
                    "fit a temperature on FER+ validation so probabilities are calibrated; ECE before/after"),
    "reference": ("kefer.lab.reference", "choose how a person's neutral face changes the scores (CK+ subject folds)"),
    "reference-video": ("kefer.lab.reference_video", "the estimated reference on videos built from CK+ (plain vs estimated)"),
    "finetune": ("kefer.lab.finetune", "fine-tune a model on CK+ by subject folds: choose the schedule, before/after"),
    "quantize": ("kefer.lab.quantize", "compare int8 calibration rules on validation"),
    "robustness": ("kefer.lab.robustness", "accuracy under blur, noise, JPEG, occlusion, pose and light"),
    "probe": ("kefer.lab.probe", "linear probes of frozen encoders on FER+ and CK+"),
    "map": ("kefer.lab.map", "a model's reference map for the app: FER+ validation faces laid out once (t-SNE)"),
}


def main(argv=None) -> int:
    return dispatch(COMMANDS, list(argv or []), "kefer lab", __doc__.strip().strip("`"))
