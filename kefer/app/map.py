"""The embedding map: recent faces and the class text anchors in 2-D, as a matplotlib Figure.

Faces are dots coloured by their predicted class, anchors labelled stars. Labels are placed by a
small repulsion routine (``place_labels``) so they stay inside the axes and apart, even when new
prompts put anchors on top of each other.
"""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from ..faces import class_colour
from ..viz import embed_2d

TSNE_MIN_FACES = 20    # below this many faces the map uses PCA (t-SNE needs a neighbourhood)
TITLE = "Embedding map"
EMPTY = ("Your recent faces will appear here as dots (coloured by predicted class), "
         "next to the class text anchors (stars).")


def new_figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(6, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9)  # fixed: labels are placed in axes units
    ax.set_xticks([])
    ax.set_yticks([])
    return fig, ax


def placeholder(message: str = EMPTY) -> Figure:
    """The map before there is anything to show: a title and what will appear."""
    fig, ax = new_figure()
    ax.set_title(TITLE, fontsize=11)
    ax.text(0.5, 0.5, wrap(message), ha="center", va="center", transform=ax.transAxes, fontsize=10, color="0.3")
    return fig


def wrap(text: str, width: int = 48) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def embedding_map(embeddings: np.ndarray, anchors: np.ndarray, classes, predicted=None) -> Figure:
    """Faces [M, d] (``predicted`` [M] class indices colour them) and text anchors [K, d] in 2-D:
    t-SNE (cosine) from TSNE_MIN_FACES faces on, PCA below."""
    m = len(embeddings)
    points = np.concatenate([np.asarray(embeddings, np.float32).reshape(m, anchors.shape[1]), anchors])
    if len(points) < 3:
        return placeholder()
    with threadpool_limits(limits=1):  # ~0.1 s; more threads fight the stream for 2 cores and take seconds
        xy, method = embed_2d(points, min_tsne=TSNE_MIN_FACES + len(anchors), max_iter=300)
    fig, ax = new_figure()
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = 0.08 * np.maximum(hi - lo, 1e-6)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    room = 0 if m else 0.3 * (hi[1] - lo[1] + 2 * pad[1])   # for the empty-state note below the anchors
    ax.set_ylim(lo[1] - pad[1] - room, hi[1] + pad[1])
    if m:
        colours = [np.array(class_colour(int(k))) / 255 for k in (predicted if predicted is not None else [0] * m)]
        ax.scatter(xy[:m, 0], xy[:m, 1], s=14, alpha=0.7, c=colours)
    for k in range(len(classes)):
        ax.scatter(*xy[m + k], s=220, marker="*", color=np.array(class_colour(k)) / 255, edgecolors="black",
                   linewidths=1, zorder=3)
    label_anchors(fig, ax, xy[m:], classes)
    faces = f"{m} recent faces (dots)" if m else "no faces yet"
    ax.set_title(f"{TITLE} ({method}): {faces}, {len(classes)} text anchors (stars)", fontsize=10)
    if not m:
        ax.text(0.5, 0.03, wrap(EMPTY, 70), ha="center", va="bottom", transform=ax.transAxes, fontsize=8,
                color="0.35")
    return fig


def label_anchors(fig: Figure, ax, xy: np.ndarray, classes) -> None:
    """Name each anchor at xy [K, 2] (data units), labels inside the axes and apart, each joined
    to its star by a thin line."""
    renderer = fig.canvas.get_renderer()
    to_axes = ax.transData + ax.transAxes.inverted()
    stars = to_axes.transform(xy)
    sizes = []
    for name in classes:
        text = ax.text(0, 0, name, fontsize=9, weight="bold", transform=ax.transAxes)
        box = text.get_window_extent(renderer).transformed(ax.transAxes.inverted())
        sizes.append((box.width + 0.01, box.height + 0.01))
        text.remove()
    corners = place_labels(stars, np.array(sizes))
    for k, name in enumerate(classes):
        colour = np.array(class_colour(k)) / 255
        ax.annotate(name, xy[k], xycoords="data", xytext=corners[k] + 0.005, textcoords="axes fraction",
                    ha="left", va="bottom", fontsize=9, weight="bold", color=colour, zorder=4,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 0, "shrinkB": 4})


def place_labels(points: np.ndarray, sizes: np.ndarray, iterations: int = 300, margin: float = 0.01) -> np.ndarray:
    """Label boxes for points [K, 2] in axes units (0..1), sizes [K, 2] (width, height) ->
    lower-left corners [K, 2]: each box starts just above-right of its point, then overlapping
    boxes push each other apart (and off the other points) along their smaller overlap, and every
    box is kept inside the axes."""
    k = len(points)
    lower = np.full(2, margin)
    upper = 1.0 - margin - sizes
    pos = np.clip(points + 0.015, lower, upper)
    rng = np.random.default_rng(0)
    for _ in range(iterations):
        moved = False
        for i in range(k):
            for j in range(i + 1, k):
                moved |= separate(pos, sizes, i, j, rng)
            for j in range(k):
                if j != i:
                    moved |= avoid_point(pos, sizes, i, points[j])
        pos = np.clip(pos, lower, upper)
        if not moved:
            break
    return pos


def separate(pos: np.ndarray, sizes: np.ndarray, i: int, j: int, rng) -> bool:
    """Push boxes i and j apart (in place) if they overlap; returns whether they did."""
    overlap = np.minimum(pos[i] + sizes[i], pos[j] + sizes[j]) - np.maximum(pos[i], pos[j])
    if (overlap <= 0).any():
        return False
    axis = int(np.argmin(overlap / np.maximum(sizes[i] + sizes[j], 1e-9)))
    centre_i, centre_j = pos[i] + sizes[i] / 2, pos[j] + sizes[j] / 2
    direction = np.sign(centre_i[axis] - centre_j[axis]) or rng.choice([-1.0, 1.0])
    step = overlap[axis] / 2 + 1e-3
    pos[i, axis] += direction * step
    pos[j, axis] -= direction * step
    return True


def avoid_point(pos: np.ndarray, sizes: np.ndarray, i: int, point: np.ndarray, radius: float = 0.012) -> bool:
    """Move box i (in place) off another anchor's star; returns whether it moved."""
    inside = (point > pos[i] - radius) & (point < pos[i] + sizes[i] + radius)
    if not inside.all():
        return False
    above = pos[i, 1] + sizes[i, 1] / 2 >= point[1]
    pos[i, 1] = point[1] + radius + 1e-3 if above else point[1] - radius - sizes[i, 1] - 1e-3
    return True
