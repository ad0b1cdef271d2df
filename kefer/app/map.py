"""The embedding map as a matplotlib Figure: where this tab's faces sit.

With a reference map for the model (``kefer.embedding_map``): its fixed background of FER+ faces,
coloured by their label, and the tab's faces placed on it (``reference_figure``: webcam faces as
dots, the latest larger; photo faces as diamonds; coloured by predicted class). Without one (a
user's own model): ``embedding_map``, a fresh t-SNE (PCA below 20 faces) of the faces with the
class text anchors (stars), whose labels a small repulsion routine (``place_labels``) keeps inside
the axes and apart, even when new prompts put anchors on top of each other.
"""
from __future__ import annotations

import functools

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from ..faces import class_colour
from ..viz import embed_2d

TSNE_MIN_FACES = 20    # below this many faces the map uses PCA (t-SNE needs a neighbourhood)
TITLE = "Embedding map"
EMPTY = ("Your recent faces will appear here as dots (coloured by predicted class), "
         "next to the class text anchors (stars).")
EMPTY_REFERENCE = "Your webcam and photo faces will appear here, among the reference faces."
WEBCAM, PHOTO = "o", "D"   # markers of the tab's faces: webcam dots, photo diamonds


def rgb(index: int) -> np.ndarray:
    return np.array(class_colour(index)) / 255


def new_figure() -> tuple[Figure, object]:
    fig = Figure(figsize=(6, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.88)  # fixed: labels are placed in axes units
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


def reference_axes(ref) -> tuple[Figure, object]:
    """A map figure whose axes span the reference map ``ref``'s points."""
    fig, ax = new_figure()
    lo, hi = ref.points.min(axis=0), ref.points.max(axis=0)
    pad = 0.04 * (hi - lo)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    return fig, ax


@functools.lru_cache(maxsize=4)
def background(ref) -> np.ndarray:
    """The fixed part of a reference map (a ``kefer.embedding_map.ReferenceMap``) as a picture [H, W, 4]
    uint8 of the map's size: its faces coloured by label, the frame and the legend. Drawn once per map
    (text and 1,000 dots are most of a redraw's time); each redraw draws only the tab's faces over it."""
    fig, ax = reference_axes(ref)
    ax.scatter(ref.points[:, 0], ref.points[:, 1], s=7, c=[rgb(k) for k in ref.labels], alpha=0.35, linewidths=0)
    handles = [Line2D([], [], ls="", marker="o", color=rgb(k), label=name) for k, name in enumerate(ref.classes)]
    handles += [Line2D([], [], ls="", marker=m, mfc="white", mec="black", label=text)
                for m, text in ((WEBCAM, "webcam face"), (PHOTO, "photo face"))]
    ax.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, framealpha=0.8, handletextpad=0.2,
              columnspacing=0.8, borderaxespad=0.2)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def reference_figure(ref, xy: np.ndarray, colours: list, photo: np.ndarray, model: str, note: str = "") -> Figure:
    """The reference map ``ref`` (``background``) with the tab's faces at xy [M, 2] (``ReferenceMap.place``),
    oldest first; colours [M] (class colour indices), photo [M] bool (diamonds; else webcam dots, the
    last one larger)."""
    fig, ax = reference_axes(ref)
    fig.figimage(background(ref), zorder=-1)
    ax.set_facecolor("none")
    for spine in ax.spines.values():
        spine.set_visible(False)
    webcam = np.flatnonzero(~photo)
    for rows, marker, size, gid in ((webcam[:-1], WEBCAM, 45, "webcam"), (webcam[-1:], WEBCAM, 170, "webcam"),
                                    (np.flatnonzero(photo), PHOTO, 80, "photo")):
        if len(rows):
            ax.scatter(xy[rows, 0], xy[rows, 1], s=size, marker=marker, c=[rgb(colours[i]) for i in rows],
                       edgecolors="black", linewidths=1.2, zorder=3, gid=gid)
    faces = (f"{len(webcam)} webcam, {int(photo.sum())} photo faces" if len(xy) else "no faces yet")
    ax.set_title(f"{TITLE}: your faces among {len(ref.points)} FER+ faces ({model})\n{faces}", fontsize=9)
    message = note or ("" if len(xy) else EMPTY_REFERENCE)
    if message:
        ax.text(0.5, 0.98, wrap(message, 80), ha="center", va="top", transform=ax.transAxes, fontsize=8, color="0.3")
    return fig


def embedding_map(embeddings: np.ndarray, anchors: np.ndarray, classes, predicted=None, photo=None,
                  note: str = "") -> Figure:
    """Faces [M, d] (``predicted`` [M] class indices colour them; ``photo`` [M] bool: diamonds) and
    text anchors [K, d] in 2-D: t-SNE (cosine) from TSNE_MIN_FACES faces on, PCA below. ``note``: a
    line under the title (e.g. why there is no reference map)."""
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
        colours = np.array([rgb(int(k)) for k in (predicted if predicted is not None else [0] * m)])
        shapes = np.zeros(m, bool) if photo is None else np.asarray(photo, bool)
        for rows, marker, gid in ((~shapes, WEBCAM, "webcam"), (shapes, PHOTO, "photo")):
            if rows.any():
                ax.scatter(xy[:m][rows, 0], xy[:m][rows, 1], s=20, alpha=0.8, c=colours[rows], marker=marker,
                           gid=gid)
    for k in range(len(classes)):
        ax.scatter(*xy[m + k], s=220, marker="*", color=rgb(k), edgecolors="black",
                   linewidths=1, zorder=3)
    label_anchors(fig, ax, xy[m:], classes)
    faces = f"{m} recent faces (webcam dots, photo diamonds)" if m else "no faces yet"
    ax.set_title(f"{TITLE} ({method}): {faces}, {len(classes)} text anchors (stars)" + (f"\n{note}" if note else ""),
                 fontsize=9)
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
        colour = rgb(k)
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
