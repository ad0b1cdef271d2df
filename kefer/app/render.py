"""What the app shows, as HTML, Markdown and pictures: similarity bars, messages, face tiles, the
faces table. Pure functions of values the session computed; no scoring here."""
from __future__ import annotations

import html

import cv2
import numpy as np

from ..faces import class_colour

NO_MODEL = "No model is loaded: faces are found but not scored. Start the app with --checkpoint PATH."
TILE = 160   # side of a face tile in the Photos gallery, pixels
GREY = (160, 160, 160)
ZERO_SHOT_TAG = " <i class='kefer-zero-shot' style='opacity:0.7'>zero-shot</i>"


def message_html(message: str, note: str = "") -> str:
    extra = f"<div style='opacity:0.8'>{html.escape(note)}</div>" if note else ""
    return f"<div class='kefer-message'><p>{html.escape(message)}</p>{extra}</div>"


def bars_html(title: str, label: str, classes, columns: list, row: int, top: int, note: str = "",
              zero_shot=(), operating: str = "") -> str:
    """A table with one bar per class and column for face ``row``; ``label`` (the face's label text) heads it.

    columns: (header, values [N, K], is_probability). Probability bars are to scale (0..1);
    similarity bars stretch from this face's lowest to its highest value so that small differences
    show, and the numbers give the true values. Classes in ``zero_shot`` get an italic tag.
    ``operating``: the operating point in words (``kefer.operating.describe``), under the headline."""
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h, _, _ in columns)
    widths = [bar_widths(values[row], is_probability) for _, values, is_probability in columns]
    lines = []
    for k, name in enumerate(classes):
        r, g, b = class_colour(k)
        cells = "".join(
            f"<td style='width:35%'><div style='background:rgba({r},{g},{b},0.85);height:0.8em;"
            f"width:{width[k]:.1f}%;display:inline-block;vertical-align:middle'></div> "
            f"<span class='kefer-value'>{values[row, k]:.3f}</span></td>"
            for (_, values, _), width in zip(columns, widths))
        weight = "bold" if k == top else "normal"
        lines.append(f"<tr class='kefer-row' data-class='{html.escape(name)}' style='font-weight:{weight}'>"
                     f"<td>{html.escape(name)}{ZERO_SHOT_TAG if name in zero_shot else ''}</td>{cells}</tr>")
    extra = f"<p class='kefer-note' style='opacity:0.8;font-size:0.9em'>{html.escape(note)}</p>" if note else ""
    if operating:
        extra = (f"<p class='kefer-operating' style='opacity:0.8;font-size:0.9em'>Operating point: "
                 f"{html.escape(operating)}</p>{extra}")
    return (f"<div class='kefer-bars'><p><b>{html.escape(title)}</b>: "
            f"<span class='kefer-label'>{html.escape(label)}</span></p>{extra}"
            f"<table style='width:100%'><tr><th style='text-align:left'>class</th>{head}</tr>"
            f"{''.join(lines)}</table></div>")


def anchor_report_html(report) -> str:
    """The prompt editor's table (a ``kefer.scoring.AnchorReport``): per class trained or zero-shot,
    its nearest other trained class with the cosine, and its cosine to its own trained anchor."""
    if report is None:
        return ""
    lines = []
    for r in report.rows:
        badge = "trained" if r.trained else "<i>zero-shot</i>"
        nearest = "–" if r.nearest is None else f"{html.escape(r.nearest)} {r.nearest_cos:.2f}"
        own = "–" if r.own is None else f"{r.own:.2f}"
        lines.append(f"<tr class='kefer-anchor' data-class='{html.escape(r.name)}' data-trained='{int(r.trained)}'>"
                     f"<td>{html.escape(r.name)}</td><td>{badge}</td><td>{nearest}</td><td>{own}</td></tr>")
    warnings = "".join(f"<p class='kefer-warning'>⚠ {html.escape(w)}</p>" for w in report.warnings)
    return (f"<div class='kefer-anchors'>{warnings}<table style='width:100%;font-size:0.9em'><tr>"
            f"<th style='text-align:left'>class</th><th style='text-align:left'>kind</th>"
            f"<th style='text-align:left'>nearest trained class, cosine</th>"
            f"<th style='text-align:left'>cosine to its trained anchor</th></tr>{''.join(lines)}</table></div>")


def template_text(prompts) -> str:
    """The template box: every template the prompts average, one per line ('' without prompts)."""
    return "\n".join(prompts.templates) if prompts is not None else ""


def template_label(prompts) -> str:
    """The template box's label: how many trained wordings the model averages."""
    n = len(prompts.templates) if prompts is not None else 0
    if n > 1:
        return f"Template: {n} trained wordings, averaged (one per line, each with [CLS]; edit, add or remove lines)"
    return "Template (must contain [CLS]); several lines are averaged"


def bar_widths(values: np.ndarray, is_probability: bool) -> np.ndarray:
    """Bar lengths in percent for one face's values [K]."""
    if is_probability:
        return 75.0 * np.clip(values, 0, 1)
    spread = max(float(values.max() - values.min()), 1e-6)
    return 7.5 + 67.5 * (values - values.min()) / spread


def face_tile(rgb: np.ndarray, box, colour=GREY, margin: float = 0.3) -> np.ndarray:
    """One face of a photo as a [TILE, TILE, 3] picture: its box (rgb's pixels) with a margin,
    letterboxed to a square, framed in the class colour. The label goes in the caption, where it
    cannot be cut off."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    x0, y0 = int(max(0, x0 - mx)), int(max(0, y0 - my))
    x1, y1 = int(min(w, x1 + mx + 1)), int(min(h, y1 + my + 1))
    return letterbox(rgb[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)], colour)


def letterbox(rgb: np.ndarray, colour=GREY) -> np.ndarray:
    """Any picture -> [TILE, TILE, 3]: scaled to fit, padded grey, a 4-px frame in ``colour``."""
    h, w = rgb.shape[:2]
    scale = (TILE - 8) / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    tile = np.full((TILE, TILE, 3), colour, np.uint8)
    tile[4:-4, 4:-4] = 235
    sh, sw = small.shape[:2]
    top, left = (TILE - sh) // 2, (TILE - sw) // 2
    tile[top:top + sh, left:left + sw] = small
    return tile


def faces_table(rows: list[dict]) -> str:
    """Markdown table of every face of every photo (rows from ``PhotoAlbum.rows``)."""
    if not rows:
        return ""
    lines = ["| photo | face | box x0, y0, x1, y1 (original pixels) | answer | most probable class | probability |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        box = "whole image" if r.get("whole_image") else ", ".join(f"{r[k]:.0f}" for k in ("x0", "y0", "x1", "y1"))
        label, top = r.get("label"), r.get("top_class")
        score = f"{r['p_' + top]:.2f}" if top else "–"
        lines.append(f"| {html.escape(r['photo'])} | {r['face']} | {box} | {html.escape(label or '–')} | "
                     f"{html.escape(top or '–')} | {score} |")
    return "\n".join(lines)
