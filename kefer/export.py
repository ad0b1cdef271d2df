"""Ship a trained model: copy a run's best checkpoint as fp16 safetensors (e.g. into assets/),
with its validation/test metrics and the command that trained it added to the metadata.
``--evaluate`` replaces the run's metrics with those of the written (fp16) file.

    python -m kefer.export runs/cpu-ferplus-full assets/mine.safetensors --evaluate \
        --command "python train.py --dataset ferplus --preset cpu --output runs/cpu-ferplus-full"
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoint import load_model, save_model
from .train.evaluate import evaluate as measure
from .recognizer import load, resolve_checkpoint


def export(run: str | Path, dest: str | Path, command: str | None = None, half: bool = True,
           evaluate: bool = False) -> Path:
    """Write ``run``'s best checkpoint to ``dest``; returns ``dest``. ``evaluate``: measure the
    written file on the run's dataset (validation and test splits) and store those metrics."""
    src = resolve_checkpoint(run)
    state, meta = load_model(src)
    metrics_file = src.parent / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        meta["metrics"] = {k: metrics[k] for k in ("val_accuracy", "test_accuracy", "test_mean_accuracy") if k in metrics}
    if command:
        meta["train_command"] = command
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_model(dest, state, meta, half=half)
    if evaluate:
        cfg = meta["config"]
        rec = load(dest)
        val, test = (measure(rec, cfg["dataset"], cfg["data_root"], classes=cfg["classes"], split=s) for s in ("val", "test"))
        meta["metrics"] = {"val_accuracy": val["val_accuracy"], "test_accuracy": test["test_accuracy"],
                           "test_mean_accuracy": test["test_mean_accuracy"], "measured_on": "this file"}
        save_model(dest, state, meta, half=half)
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kefer.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory or checkpoint file")
    p.add_argument("dest", help="the .safetensors file to write")
    p.add_argument("--command", help="the command that trained it, kept in the metadata")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16)")
    p.add_argument("--evaluate", action="store_true",
                   help="store the metrics of the written file on the run's validation and test splits "
                        "(default: the run's own, measured before fp16 conversion)")
    args = p.parse_args(argv)
    try:
        dest = export(args.run, args.dest, args.command, half=not args.fp32, evaluate=args.evaluate)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
