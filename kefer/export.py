"""Ship a trained model: copy a run's best checkpoint as fp16 safetensors (e.g. into assets/),
with its validation/test metrics and the command that trained it added to the metadata.

    python -m kefer.export runs/cpu-ferplus-full assets/mine.safetensors \
        --command "python train.py --dataset ferplus --preset cpu --output runs/cpu-ferplus-full"
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoint import load_model, save_model
from .recognizer import resolve_checkpoint


def export(run: str | Path, dest: str | Path, command: str | None = None, half: bool = True) -> Path:
    """Write ``run``'s best checkpoint to ``dest``; returns ``dest``."""
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
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kefer.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory or checkpoint file")
    p.add_argument("dest", help="the .safetensors file to write")
    p.add_argument("--command", help="the command that trained it, kept in the metadata")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights (default: fp16)")
    args = p.parse_args(argv)
    try:
        dest = export(args.run, args.dest, args.command, half=not args.fp32)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
