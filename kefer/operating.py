"""Operating points: how a model's scores become answers, chosen once on validation and stored in
the checkpoint. One job: choosing and applying them.

Both parts are optional and live under the checkpoint metadata's ``"operating"`` key (the JSON
``kefer`` header of a .safetensors file, or the metadata of a kefer .onnx file)::

    {"class_prior": {class: training frequency},
     "balance": {"strength": a, "rule": BALANCE_RULE, "val": {...}},
     "abstain": {"margin": t, "precision": p, "rule": ABSTAIN_RULE, "val": {...}}}

- **balance** (prior correction: post-hoc logit adjustment, Menon et al., ICLR 2021): the logits
  get offsets -a * log(K * prior_k), K the number of classes in the prior. Relative to uniform, so
  a class with no known prior (a zero-shot class added by text) gets offset 0. The offsets travel
  in ``scoring.Prompts`` and ``scoring.score`` adds them: the one place scores are adjusted.
- **abstain**: a face's margin is its top-1 minus top-2 probability (after balancing); below the
  stored threshold its answer is ``UNCERTAIN`` (``analysis.FaceResult.label``).

Choosing reads the validation split only, never test::

    python -m kefer.operating accurate-int8 --plot op.png --output op.json   # print, plot, keep the JSON
    python -m kefer.operating runs/mine --write                              # store it in the checkpoint
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .metrics import classification_metrics
from .scoring import Prompts, score

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"                             # the answer for a face below the abstain margin
STRENGTHS = np.round(np.arange(0, 1.0001, 0.05), 2)   # balance strengths a swept
THRESHOLDS = np.round(np.arange(0, 1.0001, 0.01), 2)  # abstain margins t swept
TOLERANCE = 0.005   # a strength may cost at most 0.5 points of overall validation accuracy
PRECISION = 0.90    # default accuracy asked of the faces answered: a live demo should still answer most faces
BALANCE_RULE = ("logits - a * log(K * training frequency); a in {0, 0.05, ..., 1}: the highest validation "
                "mean per-class accuracy among the strengths whose overall validation accuracy is at most "
                "0.5 points below a = 0's (ties: the smaller a)")
ABSTAIN_RULE = ("margin = top-1 minus top-2 probability after balancing; t in {0, 0.01, ..., 1}: the smallest t "
                "at which the validation accuracy on the faces with margin >= t is at least PRECISION")


def class_prior(targets, classes, balance: str = "none") -> dict:
    """The class prior a model is trained under, {class: probability}: the frequencies count / total
    of training labels ``targets`` [N] (indices into ``classes``), or uniform where ``balance`` is
    ``oversample`` (every class drawn equally often); classes without a training image are left out."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes))
    if balance == "oversample":
        return {c: 1 / np.count_nonzero(counts) for c, n in zip(classes, counts) if n}
    return {c: float(n / counts.sum()) for c, n in zip(classes, counts) if n}


def margins(probs: np.ndarray) -> np.ndarray:
    """Probabilities [N, K] -> top-1 minus top-2 probability [N] (1 for a single class)."""
    probs = np.asarray(probs, np.float64)
    if probs.shape[-1] < 2:
        return np.ones(probs.shape[:-1])
    top = np.sort(probs, axis=-1)
    return top[..., -1] - top[..., -2]


@dataclass(frozen=True)
class OperatingPoint:
    """A model's stored operating point: ``prior`` {class: training frequency} ({}: unknown),
    balance ``strength`` a and abstain ``margin`` t (None: not chosen)."""

    prior: dict = field(default_factory=dict)
    strength: float | None = None
    margin: float | None = None

    @classmethod
    def from_meta(cls, meta: dict) -> "OperatingPoint":
        """The operating point stored in checkpoint metadata (empty when there is none)."""
        op = meta.get("operating") or {}
        return cls(dict(op.get("class_prior") or {}), (op.get("balance") or {}).get("strength"),
                   (op.get("abstain") or {}).get("margin"))

    def offsets(self, classes, strength: float) -> np.ndarray | None:
        """Logit offsets [K] for ``classes`` at ``strength``: -a * log(K * prior), 0 for a class
        outside the prior (zero-shot); None for strength 0. Raises ValueError without a prior."""
        if not strength:
            return None
        if not self.prior:
            raise ValueError("This model stores no training class frequencies: balancing needs them "
                             "(kefer.train.evaluate.training_prior computes them from its training set).")
        k = len(self.prior)
        return np.array([-strength * np.log(k * self.prior[c]) if c in self.prior else 0.0 for c in classes],
                        np.float32)

    def balance(self, prompts: Prompts, strength: float) -> Prompts:
        """``prompts`` balanced at ``strength`` (0: raw scores); abstaining as before."""
        return replace(prompts, offsets=self.offsets(prompts.classes, strength), strength=float(strength))

    def apply(self, prompts: Prompts, balanced: bool = True, abstain: bool = True) -> Prompts:
        """``prompts`` under this operating point: the stored strength if ``balanced``, the stored
        margin if ``abstain`` (each a no-op where none is stored)."""
        strength = self.strength if balanced and self.strength is not None else 0.0
        return replace(self.balance(prompts, strength), abstain_margin=self.margin if abstain else None)


def describe(prompts: Prompts) -> str:
    """The operating point of ``prompts`` in words, e.g. "balanced (a = 0.25), 'uncertain' below margin 0.31"."""
    parts = [f"balanced (a = {prompts.strength:g})" if prompts.strength else "raw scores"]
    if prompts.abstain_margin is not None:
        parts.append(f"'{UNCERTAIN}' below margin {prompts.abstain_margin:.2f}")
    return ", ".join(parts)


# ---- choosing on validation ---------------------------------------------------------------------
def choose_strength(accuracy, mean_accuracy, tolerance: float = TOLERANCE) -> int:
    """Index of the chosen strength among a sweep whose first entry is a = 0: the highest mean
    per-class accuracy among those with overall accuracy >= accuracy[0] - tolerance (the first on ties)."""
    accuracy, mean_accuracy = np.asarray(accuracy, np.float64), np.asarray(mean_accuracy, np.float64)
    allowed = accuracy >= accuracy[0] - tolerance - 1e-12
    return int(np.argmax(np.where(allowed, mean_accuracy, -np.inf)))


def precision_coverage(margin, correct, thresholds=THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold t [T]: accuracy on the faces with margin >= t (nan where none is left) and the
    fraction of faces answered (coverage)."""
    margin, correct = np.asarray(margin, np.float64), np.asarray(correct, bool)
    answered = margin[None, :] >= np.asarray(thresholds, np.float64)[:, None] - 1e-12   # [T, N]
    n = answered.sum(1)
    hits = (answered & correct[None, :]).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, hits / np.maximum(n, 1), np.nan), n / max(len(margin), 1)


def choose_margin(precision, precision_asked: float) -> int | None:
    """Index of the smallest threshold whose precision reaches ``precision_asked`` (None: none does)."""
    ok = np.nan_to_num(np.asarray(precision, np.float64), nan=-1.0) >= precision_asked
    return int(np.argmax(ok)) if ok.any() else None


def choose(features: np.ndarray, labels: np.ndarray, prompts: Prompts, prior: dict, idx,
           precision: float = PRECISION, split: str = "val") -> dict:
    """Sweep the balance strengths and abstain thresholds on one split's representations
    [N, d] with ``labels`` [N] (indices into the dataset's classes, ``idx`` their model indices).

    Returns {"operating": what the checkpoint stores, "sweep": {"strength": [...], "accuracy",
    "mean_accuracy", "threshold", "precision", "coverage"}}; abstain is left out where no
    threshold reaches ``precision``.
    """
    point = OperatingPoint(prior)
    idx = np.asarray(idx)
    classes = [prompts.classes[i] for i in idx]
    labels = np.asarray(labels)
    results = []
    for a in STRENGTHS:
        probs = score(features, point.balance(prompts, float(a)))[1]
        results.append((probs, classification_metrics(labels, probs[:, idx].argmax(1), classes)))
    accuracy = [m["accuracy"] for _, m in results]
    mean_accuracy = [m["mean_accuracy"] for _, m in results]
    best = choose_strength(accuracy, mean_accuracy)
    probs, m = results[best]
    val = {"split": split, "n": m["n"], "accuracy": m["accuracy"], "mean_accuracy": m["mean_accuracy"],
           "accuracy_raw": accuracy[0], "mean_accuracy_raw": mean_accuracy[0],
           "per_class_accuracy": m["per_class_accuracy"]}
    operating = {"class_prior": prior,
                 "balance": {"strength": float(STRENGTHS[best]), "rule": BALANCE_RULE, "val": val}}
    correct = probs.argmax(1) == idx[labels]     # the full argmax, as a face is answered at inference
    prec, coverage = precision_coverage(margins(probs), correct)
    chosen = choose_margin(prec, precision)
    if chosen is None:
        log.warning("no margin reaches validation precision %.3f: no abstain threshold", precision)
    else:
        operating["abstain"] = {
            "margin": float(THRESHOLDS[chosen]), "precision": precision,
            "rule": ABSTAIN_RULE.replace("PRECISION", f"{precision:g}"),
            "val": {"split": split, "n": int(len(labels)), "coverage": float(coverage[chosen]),
                    "answered_accuracy": float(prec[chosen])}}
    sweep = {"strength": STRENGTHS.tolist(), "accuracy": accuracy, "mean_accuracy": mean_accuracy,
             "threshold": THRESHOLDS.tolist(), "precision": [None if np.isnan(p) else float(p) for p in prec],
             "coverage": coverage.tolist()}
    return {"operating": operating, "sweep": sweep}


def table(result: dict) -> str:
    """The sweep as text: strengths with the chosen one marked, then thresholds every 0.05 and the chosen one."""
    op, sweep = result["operating"], result["sweep"]
    a = op["balance"]["strength"]
    lines = ["    a   val acc  mean/class"]
    for s, acc, mean in zip(sweep["strength"], sweep["accuracy"], sweep["mean_accuracy"]):
        lines.append(f"{s:5.2f}  {100 * acc:7.2f}  {100 * mean:9.2f}" + ("  <- chosen" if s == a else ""))
    t = op.get("abstain", {}).get("margin")
    lines.append(f"\nabstain (after balancing at a = {a:g}):\n    t  precision  coverage")
    for th, p, c in zip(sweep["threshold"], sweep["precision"], sweep["coverage"]):
        if round(th * 100) % 5 == 0 or th == t:
            shown = "      -" if p is None else f"{100 * p:7.2f}"
            lines.append(f"{th:5.2f}  {shown}    {100 * c:6.2f}" + ("  <- chosen" if th == t else ""))
    if t is None:
        lines.append(f"no threshold reaches precision {100 * result['precision']:.1f}%")
    return "\n".join(lines)


def write(path: Path, operating: dict) -> None:
    """Store ``operating`` in the checkpoint file at ``path`` (.safetensors: tensors and dtypes kept
    byte for byte; .onnx: its metadata), keeping the rest of its metadata."""
    from .backend import read_onnx_meta, update_file_meta
    from .checkpoint import read_meta

    meta = read_onnx_meta(path)[0] if path.suffix == ".onnx" else read_meta(path)
    update_file_meta(path, {"operating": {**(meta.get("operating") or {}), **operating}})


def main(argv=None) -> int:
    from .recognizer import load, resolve_checkpoint
    from .train.evaluate import split_features, training_prior
    from .viz import plot_operating

    p = argparse.ArgumentParser(prog="python -m kefer.operating", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors or .onnx checkpoint, a run directory, or an assets/ model name")
    p.add_argument("--precision", type=float, default=PRECISION,
                   help=f"validation accuracy asked of the faces answered (default {PRECISION})")
    p.add_argument("--dataset", help="whose validation split (default: the model's training dataset)")
    p.add_argument("--data-root", help="dataset root (default: $KEFER_DATA/<dataset> or ../shared/data/<dataset>)")
    p.add_argument("--write", action="store_true", help="store the operating point in the checkpoint file")
    p.add_argument("--plot", help="write the sweep as a figure (.png)")
    p.add_argument("--output", help="write the result as JSON")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not 0 < args.precision <= 1:
        print("error: --precision must be in (0, 1]", file=sys.stderr)
        return 2
    try:
        path = resolve_checkpoint(args.checkpoint)
        rec = load(path, device=args.device, balanced=False, abstain=False)
        cfg = rec.meta.get("config", {})
        dataset = args.dataset or cfg.get("dataset")
        data_root = args.data_root or (None if args.dataset else cfg.get("data_root"))
        if not dataset:
            raise ValueError("The checkpoint names no training dataset; pass --dataset.")
        prior = rec.operating.prior or training_prior(rec)
        _, features, labels, idx = split_features(rec, dataset, data_root, "val")
        result = choose(features.numpy(), labels.numpy(), rec.prompts, prior, idx.numpy(), args.precision)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"checkpoint": str(path), "dataset": dataset, "precision": args.precision, **result}
    print(f"{rec.name} on {dataset}/val ({len(labels)} faces), backend {rec.backend.name}")
    print(table(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot_operating(result, args.plot, f"{rec.name} on {dataset}/val")
    if args.write:
        write(path, result["operating"])
        log.info("operating point written into %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
