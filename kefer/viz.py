"""Plots people would rather look at than read: confusion matrices, t-SNE with text anchors,
training curves, operating-point sweeps, framing and template studies. All write PNG files
(matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(cm, classes: list[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class) with counts in each cell."""
    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(classes), 0.8 + 0.8 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def embed_2d(points: np.ndarray, seed: int = 0, min_tsne: int = 30, max_iter: int = 1000) -> tuple[np.ndarray, str]:
    """[N, d] -> ([N, 2], method): t-SNE (cosine) for ``min_tsne`` points or more, PCA below
    (t-SNE needs a neighbourhood)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if len(points) < min_tsne:
        return PCA(n_components=2).fit_transform(points), "PCA"
    perplexity = min(30.0, (len(points) - 1) / 3)
    xy = TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
              random_state=seed, max_iter=max_iter).fit_transform(points)
    return xy, "t-SNE"


def plot_tsne(feats, labels, anchors, classes: list[str], path: str | Path, title: str = "",
              max_points: int = 2000, anchor_kind: str = "text anchors", seed: int = 0) -> None:
    """t-SNE of L2-normalised representations [N, d] together with the class anchors [K, d]."""
    feats, labels, anchors = np.asarray(feats, float), np.asarray(labels), np.asarray(anchors, float)
    if len(feats) > max_points:
        keep = np.random.default_rng(seed).choice(len(feats), max_points, replace=False)
        feats, labels = feats[keep], labels[keep]
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)  # noqa: E731
    xy, _ = embed_2d(np.concatenate([unit(feats), unit(anchors)]), seed)
    pts, anc = xy[: len(feats)], xy[len(feats):]
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7, 6))
    for k, c in enumerate(classes):
        sel = labels == k
        ax.scatter(pts[sel, 0], pts[sel, 1], s=5, alpha=0.5, color=colors(k % 10), label=c)
        ax.scatter(*anc[k], s=250, marker="*", color=colors(k % 10), edgecolor="black", linewidth=1.2)
        angle = 2 * np.pi * k / len(classes)  # fan labels out so anchors that sit close stay readable
        ax.annotate(c, anc[k], xytext=(28 * np.cos(angle), 28 * np.sin(angle)), textcoords="offset points",
                    fontsize=9, weight="bold", ha="center", va="center", color=colors(k % 10),
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    ax.set_title(f"{title}\n(points: faces by true class; stars: {anchor_kind})", fontsize=9)
    ax.legend(markerscale=3, fontsize=7, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_history(history: list[dict], path: str | Path) -> None:
    """Loss terms and train/val accuracy per epoch; a fine-tune's "epoch 0" row (the starting model,
    validation figures only) starts the validation curves."""
    accuracies = ("train_accuracy", "val_accuracy", "val_mean_accuracy")
    terms = [k for k in dict.fromkeys(k for r in history for k in r)
             if k not in ("epoch", "lr", "seconds", *accuracies)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys in ((a, terms), (b, accuracies)):
        for k in keys:
            rows = [r for r in history if r.get(k) not in (None, "")]
            if rows:
                ax.plot([r["epoch"] for r in rows], [float(r[k]) for r in rows], marker=".", label=k)
        ax.set_xlabel("epoch")
        ax.legend()
    a.set_title("training losses")
    b.set_title("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_before_after(before: list[dict], after: list[dict], classes: list[str], path: str | Path,
                      title: str) -> None:
    """Per-class accuracy of runs before and after (e.g. fine-tuning): bars are the means over the
    runs, dots the runs. before, after: one {class: accuracy} per run."""
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(classes), 3.8))
    for shift, runs, name in ((-0.2, before, "before"), (0.2, after, "after")):
        values = np.array([[r[c] for c in classes] for r in runs]) * 100
        ax.bar(x + shift, values.mean(0), 0.38, label=f"{name} (mean per class {values.mean():.1f})")
        for row in values:
            ax.plot(x + shift, row, "k.", markersize=3)
    ax.set_xticks(x, classes, rotation=30)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timeline(tracks: dict, classes: list[str], path: str | Path, max_tracks: int = 8) -> None:
    """Each tracked face's class probabilities over time, one panel per track (the longest
    ``max_tracks``). tracks: {(video name, track id): [(time s, probabilities [K]), ...]}."""
    longest = sorted(tracks.items(), key=lambda kv: -len(kv[1]))[:max_tracks]
    fig, axes = plt.subplots(len(longest), 1, figsize=(9, 1.2 + 1.9 * len(longest)), squeeze=False, sharex=True)
    colors = plt.get_cmap("tab10")
    for ax, ((video, track), points) in zip(axes[:, 0], longest):
        t = np.array([p[0] for p in points])
        probs = np.stack([p[1] for p in points])
        ax.stackplot(t, probs.T, colors=[colors(k % 10) for k in range(len(classes))], labels=classes, alpha=0.9)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability", fontsize=8)
        ax.set_title(f"{video}, track {track} ({len(points)} frames)", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_operating(result: dict, path: str | Path, title: str = "") -> None:
    """A ``kefer.lab.operating.choose`` result: validation accuracy and mean per-class accuracy against
    the balance strength a (the chosen one marked), and precision and coverage against the abstain
    margin t (the chosen one marked)."""
    sweep, op = result["sweep"], result["operating"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("accuracy", "overall"), ("mean_accuracy", "mean per class")):
        a.plot(sweep["strength"], 100 * np.array(sweep[key]), marker=".", label=label)
    a.axvline(op["balance"]["strength"], color="grey", ls="--", label=f"chosen a = {op['balance']['strength']:g}")
    a.set_xlabel("balance strength a")
    a.set_ylabel("validation accuracy (%)")
    a.set_title("balance")
    a.legend()
    precision = np.array([np.nan if p is None else p for p in sweep["precision"]], float)
    b.plot(sweep["threshold"], 100 * precision, label="accuracy on answered faces")
    b.plot(sweep["threshold"], 100 * np.array(sweep["coverage"]), label="coverage (answered)")
    if "abstain" in op:
        b.axvline(op["abstain"]["margin"], color="grey", ls="--", label=f"chosen t = {op['abstain']['margin']:.2f}")
    b.axhline(100 * result["precision"], color="grey", ls=":", lw=1)
    b.set_xlabel("abstain margin t (top-1 minus top-2 probability)")
    b.set_ylabel("%")
    b.set_title(f"abstain, after balancing at a = {op['balance']['strength']:g}")
    b.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_study(study: dict, classes: list[str], title: str, path) -> None:
    """Grouped bars: per-class accuracy for each framing, mean per class in the legend."""
    fig, ax = plt.subplots(figsize=(13, 4))
    width = 0.8 / len(study)
    for i, (name, m) in enumerate(study.items()):
        values = [100 * (m["per_class_accuracy"][c] or 0) for c in classes]
        ax.bar(np.arange(len(classes)) + i * width, values, width,
               label=f"{name} (mean {100 * m['mean_accuracy']:.1f}, overall {100 * m['accuracy']:.1f})")
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(rows: list[dict], title: str, path) -> None:
    """Horizontal bars, one per template (``kefer.lab.templates.sweep`` rows), the best single template's
    accuracy dashed; adjective rows in lighter colours; a black tick at the raw accuracy (the
    template's embeddings as they stand) where it differs from the bar's wording method."""
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    palette = {("paper", "own"): "#8fb3d9", ("held-out", "own"): "#d9a38f", ("tuning", "own"): "#a3cf9b",
               ("paper", "adjectives"): "#c6d8ec", ("held-out", "adjectives"): "#ecd1c6",
               ("tuning", "adjectives"): "#d3e9cf"}
    colours = [palette.get((r["set"], r["names"]), "#bbbbbb") for r in rows]
    ax.barh(y, [100 * r["accuracy"] for r in rows], color=colours)
    raw = [r["by_wording"].get("raw", r)["accuracy"] for r in rows]
    ticks = [(yi, 100 * u) for yi, u, r in zip(y, raw, rows) if u != r["accuracy"]]
    if ticks:
        ax.scatter([x for _, x in ticks], [yi for yi, _ in ticks], marker="|", s=120, color="black",
                   label="raw embeddings")
    for yi, r in zip(y, rows):
        ax.text(100 * r["accuracy"] + 0.3, yi, f"{100 * r['accuracy']:.1f}", va="center", fontsize=8)
    best = max(100 * r["accuracy"] for r in rows if r["single"])
    ax.axvline(best, ls="--", color="grey")
    ax.axvline(best - 2, ls=":", color="grey", label="2 points under the best template")
    ax.set_yticks(y, [r["template"] + (" (adjectives)" if r["names"] == "adjectives" else "") for r in rows],
                  fontsize=8)
    lo = min(100 * min(r["accuracy"], u) for r, u in zip(rows, raw))
    ax.set_xlim(max(0, lo - 5), min(100, best + 5))
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"accuracy (%), unseen wordings made into anchors by '{rows[0]['wording']}'\n(blue: the paper's "
                  "templates, red: held out, green: tuning, grey: others; pale: adjective class names)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_wordings(accuracies: dict, title: str, path) -> None:
    """Per model and wording method (``{model: {method: [accuracy of each template]}}``,
    ``kefer.lab.templates.single_accuracies``): the mean accuracy (bars) and the worst (black tick)."""
    models = list(accuracies)
    methods = list(next(iter(accuracies.values())))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(models) * len(methods) + 1.4))
    colours = plt.get_cmap("tab10")
    for m, model in enumerate(models):
        for w, method in enumerate(methods):
            accs = [100 * a for a in accuracies[model][method]]
            y = -(m * (len(methods) + 1) + w)
            ax.barh(y, np.mean(accs), color=colours(w), label=method if m == 0 else None)
            ax.scatter(min(accs), y, marker="|", s=150, color="black", label="worst template" if m == w == 0 else None)
            ax.text(np.mean(accs) + 0.5, y, f"{np.mean(accs):.1f}", va="center", fontsize=8)
    ax.set_yticks([-(m * (len(methods) + 1) + (len(methods) - 1) / 2) for m in range(len(models))], models)
    ax.set_xlabel("accuracy (%) of each template alone: mean over the templates (bar), worst (tick)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(bins_before: dict, bins_after: dict, path, title: str = "") -> None:
    """Reliability diagrams: per panel ({name: bins}, ``kefer.lab.temperature.ece``'s per-bin
    "lower", "upper", "confidence", "accuracy", "count"), the accuracy of the faces in each confidence
    bin (bars) against the diagonal (perfect calibration), the gap to the bin's mean confidence in
    red; before (top row) and after (bottom row), with each panel's ECE."""
    names = list(bins_before)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 7.2), squeeze=False)
    for row, (when, bins_of) in enumerate((("before", bins_before), ("after", bins_after))):
        for ax, name in zip(axes[row], names):
            b = bins_of[name]
            lower, upper = np.array(b["lower"], float), np.array(b["upper"], float)
            count = np.array(b["count"], float)
            acc = np.array([np.nan if a is None else a for a in b["accuracy"]], float)
            conf = np.array([np.nan if c is None else c for c in b["confidence"]], float)
            full = count > 0
            ece = float(np.nansum(count * np.abs(acc - conf)) / max(count.sum(), 1))
            width = upper - lower
            ax.bar(lower[full], acc[full], width[full], align="edge", color="#4c72b0", edgecolor="black",
                   linewidth=0.5, label="accuracy")
            ax.bar(lower[full], (conf - acc)[full], width[full], bottom=acc[full], align="edge", color="#dd8452",
                   alpha=0.45, edgecolor="#c44e52", linewidth=0.5, hatch="//", label="gap to confidence")
            ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
            share = count / max(count.sum(), 1)
            ax.step(np.append(lower, 1.0), np.append(share, share[-1]), where="post", color="#2ca02c", lw=1.2,
                    label="share of faces")
            ax.text(0.03, 0.93, f"ECE {ece:.3f}\nn = {int(count.sum())}", transform=ax.transAxes, va="top",
                    fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_aspect("equal")
            ax.set_title(f"{name}, {when}", fontsize=9)
            ax.set_xlabel("top-1 confidence")
            if ax is axes[row, 0]:
                ax.set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7, loc="center left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
