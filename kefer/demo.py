"""The Gradio app: what the model sees (faces, labels, similarity bars) and why (embedding map, prompts).

``build_demo(recognizer) -> gr.Blocks``. Objects every browser tab shares and only reads (the
recogniser, the MTCNN detector) live in ``App``; everything a tab changes (its prompts, face
tracks, smoothing, neutral calibration, recent embeddings, photos) lives in its own ``Session``,
kept in ``gr.State``, so two tabs can stream at once without seeing each other's edits.

Scores, for a face embedding f [d] and class text anchors t_k [K, d] (all L2-normalised):
cosine cos(f, t_k) and probability softmax_k(cos / tau), tau = 0.01 as in training.
"""

import functools
import html
import os
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage analytics calls

import gradio as gr
import numpy as np
from matplotlib.figure import Figure
from threadpoolctl import threadpool_limits

from .analysis import EmbeddingSmoother
from .faces import (FaceDetector, FaceTracker, ImageError, class_colour, draw,
                    limit_size, load_image, to_rgb, whole_image_face)
from .losses import TAU
from .text import PAPER_TEMPLATES, PLACEHOLDER
from .scoring import Prompts
from .viz import embed_2d

HISTORY = 150          # face embeddings kept per session for the embedding map
TSNE_MIN_FACES = 20    # below this many faces the map uses PCA (t-SNE needs a neighbourhood)
PLOT_SECONDS = 3.0     # the map is redrawn by a timer, never in the per-frame path
DISPLAY_SIDE = 1024    # annotated photos are shown at most this large
GREY = (160, 160, 160)


def normalise(x: np.ndarray) -> np.ndarray:
    """L2-normalise along the last axis (zero vectors stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class NeutralCalibration:
    """The user's own neutral face, from a few seconds of webcam frames.

    After recording, ``mean`` is f_n, the renormalised mean of the recorded face embeddings [d],
    and ``threshold`` the 10th percentile of cos(f_i, f_n) over those frames: how far the user's
    own neutral frames wander. ``relative`` then scores the paper's emotional-to-neutral direction
    with its learnt neutral G(f) replaced by this measured one (see ``relative``).
    """

    SECONDS = 3.0
    MIN_FRAMES = 5

    def __init__(self):
        self.started = None
        self.frames = []
        self.mean = None
        self.threshold = None
        self.message = ""

    @property
    def recording(self) -> bool:
        return self.started is not None

    def start(self, now: float) -> None:
        self.started, self.frames = now, []
        self.message = f"Recording your neutral face: hold still for {self.SECONDS:.0f} s."

    def add(self, embedding, now: float) -> None:
        """Feed one frame's embedding [d] of the selected face (None: no face in the frame)."""
        if self.started is None:
            return
        if embedding is not None:
            self.frames.append(embedding)
        if now - self.started < self.SECONDS:
            self.message = f"Recording your neutral face: {self.SECONDS - (now - self.started):.1f} s left."
            return
        self.started = None
        if len(self.frames) < self.MIN_FRAMES:
            self.message = (f"Only {len(self.frames)} frames with a face were recorded; keep your face "
                            f"in view with the webcam streaming and record again.")
            return
        f = np.stack(self.frames)
        self.mean = normalise(f.mean(axis=0))
        self.threshold = float(np.quantile(f @ self.mean, 0.1)) - 1e-4  # float rounding: a recorded frame stays neutral
        self.message = f"Neutral face recorded from {len(f)} frames."

    def relative(self, embeddings: np.ndarray, anchors: np.ndarray, neutral: int) -> np.ndarray:
        """embeddings [N, d], anchors [K, d] -> [N, K].

        Column k != neutral: cos(f - f_n, t_k - t_neutral), whether the face moved away from the
        user's neutral in the direction the text says expression k lies (the paper's Δf vs Δt).
        Column neutral: cos(f, f_n), how close the face is to the user's neutral.
        """
        delta_f = normalise(embeddings - self.mean)
        delta_t = normalise(anchors - anchors[neutral])
        rel = delta_f @ delta_t.T
        rel[:, neutral] = embeddings @ self.mean
        return rel

    def labels(self, rel: np.ndarray, neutral: int) -> np.ndarray:
        """[N, K] relative scores -> [N] class indices: neutral while cos(f, f_n) >= threshold,
        else the expression whose direction Δf follows best."""
        expressive = rel.copy()
        expressive[:, neutral] = -np.inf
        return np.where(rel[:, neutral] >= self.threshold, neutral, expressive.argmax(axis=1))


@dataclass
class Photo:
    """One uploaded image: rgb [H, W, 3] uint8, its faces (with crops) and their embeddings [N, d]."""

    name: str
    rgb: np.ndarray
    faces: list
    embeddings: np.ndarray = None
    whole: bool = False


class App:
    """What all sessions share and only read: the recognisers (or None), the detectors, a text lock.

    ``recognizer`` scores webcam frames (a fast model); ``photo_recognizer`` (default: the same)
    scores uploaded photos, where accuracy matters more than speed. Both must share the text
    space: sessions' prompts are encoded once and compared with either model's representations.
    Webcam frames are searched at 320 px for faces of 40+ px there (fast); photos at up to 1280 px
    for faces of 20+ px there (thorough: small faces in large group photos).
    """

    def __init__(self, recognizer, device: str = "cpu", detect_every: int = 3, photo_recognizer=None):
        self.rec = recognizer
        self.photo_rec = photo_recognizer or recognizer
        if recognizer is not None and self.photo_rec is not recognizer:
            same = (recognizer.meta["text_encoder"] == self.photo_rec.meta["text_encoder"]
                    and recognizer.classes == self.photo_rec.classes
                    and np.allclose(recognizer.text_embeddings, self.photo_rec.text_embeddings, atol=1e-3))
            if not same:
                raise ValueError(f"The webcam model {recognizer.name!r} and the photo model "
                                 f"{self.photo_rec.name!r} need the same classes, prompts and text encoder.")
        crop_size = recognizer.input_size if recognizer is not None else 112
        photo_crop = self.photo_rec.input_size if self.photo_rec is not None else 112
        self.detector = FaceDetector(device=device, crop_size=crop_size)
        self.photo_detector = FaceDetector(device=device, crop_size=photo_crop, detect_side=1280, min_face_size=20)
        self.detect_every = detect_every
        self.text_lock = threading.Lock()
        self.default_prompts = None
        if recognizer is not None:
            self.default_prompts = recognizer.own_prompts

    def encode(self, template: str, classes: list) -> Prompts:
        """Text anchors for new prompts, from the checkpoint's text encoder; the shared
        recogniser is not changed. Raises ValueError for a bad template or class list."""
        return self.rec.encode_prompts(template=template, classes=classes)


class Session:
    """One browser tab: its prompts, face tracks, smoothing, calibration, embeddings and photos."""

    def __init__(self, app: App):
        self.app = app
        self.prompts = app.default_prompts
        self.tracker = FaceTracker(app.detector, every=app.detect_every)
        self.smoother = EmbeddingSmoother(window=5)
        self.neutral = NeutralCalibration()
        self.selected_track = None
        self.frame_faces = []
        self.history = deque(maxlen=HISTORY)
        self.lock = threading.Lock()  # the map timer reads history while the stream appends to it
        self.version = 0   # bumped when history or prompts change; the map timer redraws only then
        self.plotted = -1
        self.photos = []
        self.photo_index = 0

    # ---- scoring -------------------------------------------------------------------------------
    def scores(self, embeddings: np.ndarray, p: Prompts, relative: bool = False):
        """embeddings [N, d] against prompts p -> (labels [N] class indices, columns for the bars, note).

        columns: list of (header, values [N, K], is_probability). Relative mode needs a recorded
        neutral face and a 'neutral' class; otherwise the plain scores come back with a note why.
        Callers pass one snapshot of ``self.prompts``, as another event may replace it meanwhile.
        """
        cos = embeddings @ p.anchors.T
        probs = softmax(cos / TAU)
        columns = [("cosine", cos, False), ("probability", probs, True)]
        if not relative:
            return probs.argmax(axis=1), columns, ""
        if self.neutral.mean is None:
            return probs.argmax(axis=1), columns, "Record your neutral face to see scores relative to it."
        if p.neutral_index is None:
            return probs.argmax(axis=1), columns, "Relative scores need a class called 'neutral'."
        rel = self.neutral.relative(embeddings, p.anchors, p.neutral_index)
        note = (f"Relative to your neutral: row 'neutral' = cos(f, f_neutral) (neutral at or above "
                f"{self.neutral.threshold:.2f}); other rows = cos(f - f_neutral, t_k - t_neutral).")
        return self.neutral.labels(rel, p.neutral_index), [("relative", rel, False)] + columns, note

    def annotate(self, rgb: np.ndarray, faces: list, embeddings, p: Prompts, relative: bool, selected):
        """Draw faces with their top labels -> (annotated [H, W, 3], labels [N], columns, note)."""
        if embeddings is None:
            return draw(rgb, faces, ["face"] * len(faces), [GREY] * len(faces), selected), None, [], ""
        labels, columns, note = self.scores(embeddings, p, relative)
        probs = columns[-1][1]
        texts = [f"{p.classes[k]} {probs[i, k]:.2f}" for i, k in enumerate(labels)]
        annotated = draw(rgb, faces, texts, [class_colour(k) for k in labels], selected)
        return annotated, labels, columns, note

    def embed(self, faces: list, photos: bool = False):
        """Faces with crops -> embeddings [N, d] from the webcam (or ``photos``) model; None without
        a model or faces."""
        rec = self.app.photo_rec if photos else self.app.rec
        if rec is None or not faces:
            return None
        return np.asarray(rec.embed([f.crop for f in faces]), dtype=np.float32)

    def remember(self, embeddings) -> None:
        if embeddings is not None:
            with self.lock:
                self.history.extend(embeddings)
            self.version += 1

    # ---- webcam --------------------------------------------------------------------------------
    def process_frame(self, frame, smoothing: bool = True, relative: bool = False):
        """One webcam frame [H, W, 3] -> (annotated frame [H, W, 3] uint8, bars HTML)."""
        prompts = self.prompts
        rgb = to_rgb(frame)
        faces = self.tracker.update(rgb)
        self.frame_faces = faces
        embeddings = self.embed(faces)
        if embeddings is not None and smoothing:
            embeddings = normalise(self.smoother([f.track_id for f in faces], embeddings))
        elif not smoothing:
            self.smoother.reset()
        selected = self.selected_index(faces)
        self.neutral.add(None if embeddings is None else embeddings[selected], time.monotonic())
        self.remember(embeddings)
        annotated, labels, columns, note = self.annotate(rgb, faces, embeddings, prompts, relative, selected)
        status = " ".join(s for s in (self.neutral.message, note) if s)
        if not faces:
            return annotated, message_html("No face in view.", status)
        if embeddings is None:
            return annotated, message_html(NO_MODEL)
        title = f"Face {selected + 1} of {len(faces)}" + (" (largest)" if self.selected_track is None else "")
        return annotated, bars_html(title, prompts.classes, columns, selected, labels[selected], status)

    def selected_index(self, faces: list):
        """Index of the face the user clicked (while it is tracked), else of the largest face."""
        for i, face in enumerate(faces):
            if face.track_id == self.selected_track:
                return i
        self.selected_track = None
        return int(np.argmax([f.area for f in faces])) if faces else None

    def select_at(self, x: float, y: float) -> None:
        """Select the smallest face whose box contains the point (x, y); elsewhere: back to largest."""
        hits = [f for f in self.frame_faces if f.box[0] <= x <= f.box[2] and f.box[1] <= y <= f.box[3]]
        self.selected_track = min(hits, key=lambda f: f.area).track_id if hits else None

    # ---- photos --------------------------------------------------------------------------------
    def add_photos(self, paths: list) -> list:
        """Read, detect and embed uploaded files; returns one message per unreadable file."""
        self.photos, self.photo_index, messages = [], 0, []
        for path in paths:
            try:
                rgb = load_image(path)
            except ImageError as err:
                messages.append(str(err))
                continue
            self.photos.append(Photo(os.path.basename(str(path)), rgb, self.app.photo_detector.faces(rgb)))
        self.embed_photos()
        return messages

    def score_whole_images(self) -> None:
        """Score every photo without a face as one face (the whole image, centre-cropped)."""
        for photo in self.photos:
            if not photo.faces:
                photo.faces, photo.whole = [whole_image_face(photo.rgb, self.app.photo_detector.crop_size)], True
        self.embed_photos()

    def embed_photos(self) -> None:
        """Embed the faces of all photos not embedded yet, in one batch."""
        todo = [p for p in self.photos if p.faces and p.embeddings is None]
        embeddings = self.embed([f for p in todo for f in p.faces], photos=True)
        if embeddings is None:
            return
        self.remember(embeddings)
        start = 0
        for photo in todo:
            photo.embeddings, start = embeddings[start : start + len(photo.faces)], start + len(photo.faces)

    def photo_views(self):
        """-> (gallery [(image, caption)], bars HTML of the chosen photo's largest face, faces table)."""
        gallery, rows, prompts = [], [], self.prompts
        for photo in self.photos:
            annotated, labels, columns, _ = self.annotate(photo.rgb, photo.faces, photo.embeddings, prompts,
                                                          False, None)
            gallery.append((limit_size(annotated, DISPLAY_SIDE), photo_caption(photo, prompts, labels, columns)))
            for i, face in enumerate(photo.faces):
                top = "" if labels is None else (f"{prompts.classes[labels[i]]} | "
                                                 f"{columns[-1][1][i, labels[i]]:.2f}")
                box = "whole image" if photo.whole else ", ".join(str(int(v)) for v in face.box)
                rows.append(f"| {html.escape(photo.name)} | {i + 1} | {box} | {top or '– | –'} |")
        table = ("| photo | face | box | class | probability |\n|---|---|---|---|---|\n" + "\n".join(rows)
                 if rows else "")
        return gallery, self.photo_bars(), table

    def photo_bars(self) -> str:
        """Bars for the largest face of the chosen photo."""
        if not self.photos:
            return ""
        photo = self.photos[min(self.photo_index, len(self.photos) - 1)]
        if not photo.faces:
            return message_html(f"No face found in {photo.name}.")
        if photo.embeddings is None:
            return message_html(NO_MODEL)
        prompts = self.prompts
        labels, columns, _ = self.scores(photo.embeddings[:1], prompts)
        return bars_html(f"{photo.name}: largest face", prompts.classes, columns, 0, labels[0])

    # ---- prompts -------------------------------------------------------------------------------
    def set_prompts(self, template: str, classes_text: str) -> str:
        """Validate and apply edited prompts; returns a message (an error starts with 'Error')."""
        if self.app.rec is None:
            return "Error: no model is loaded, so there are no prompts to edit."
        template = template.strip()
        classes = list(dict.fromkeys(c.strip() for c in classes_text.replace(",", "\n").splitlines() if c.strip()))
        if PLACEHOLDER not in template:
            return f"Error: the template must contain {PLACEHOLDER}, where the class name goes."
        if not classes:
            return "Error: give at least one class name."
        try:
            self.prompts = self.app.encode(template, classes)
        except ValueError as err:
            return f"Error: {err}"
        self.version += 1
        return f"Applied: {len(classes)} classes, template “{html.escape(template)}”."

    def reset_prompts(self) -> None:
        self.prompts = self.app.default_prompts
        self.version += 1

    # ---- embedding map ---------------------------------------------------------------------------
    def plot(self):
        """The embedding map as a matplotlib Figure, or None when nothing changed since the last one."""
        prompts = self.prompts
        if self.version == self.plotted or prompts is None:
            return None
        self.plotted = self.version
        with self.lock:
            embeddings = np.array(self.history, dtype=np.float32).reshape(-1, prompts.anchors.shape[1])
        return embedding_map(embeddings, prompts.anchors, prompts.classes)


def photo_caption(photo: Photo, prompts: Prompts, labels, columns) -> str:
    """'name: top class probability (n faces)' for the gallery."""
    if not photo.faces:
        return f"{photo.name}: no face found"
    if labels is None:
        return f"{photo.name}: {len(photo.faces)} face(s)"
    k = labels[0]
    return f"{photo.name}: {prompts.classes[k]} {columns[-1][1][0, k]:.2f} ({len(photo.faces)} face(s))"


NO_MODEL = "No model is loaded: faces are found but not scored. Start the app with --checkpoint PATH."


def embedding_map(embeddings: np.ndarray, anchors: np.ndarray, classes: list) -> Figure:
    """Faces [M, d] and text anchors [K, d] in 2-D: t-SNE (cosine) from TSNE_MIN_FACES faces on,
    PCA below; faces coloured by their predicted class, anchors drawn as labelled stars."""
    points = np.concatenate([embeddings, anchors])
    fig = Figure(figsize=(6, 4.8), tight_layout=True)
    ax = fig.add_subplot()
    ax.set_xticks([])
    ax.set_yticks([])
    if len(points) < 3:
        ax.text(0.5, 0.5, "Not enough points yet", ha="center", va="center", transform=ax.transAxes)
        return fig
    with threadpool_limits(limits=1):  # ~0.1 s; more threads fight the stream for 2 cores and take seconds
        xy, method = embed_2d(points, min_tsne=TSNE_MIN_FACES + len(anchors), max_iter=300)
    m = len(embeddings)
    if m:
        predicted = (embeddings @ anchors.T).argmax(axis=1)
        ax.scatter(xy[:m, 0], xy[:m, 1], s=14, alpha=0.7, c=[np.array(class_colour(k)) / 255 for k in predicted])
    for k, name in enumerate(classes):
        colour = np.array(class_colour(k)) / 255
        ax.scatter(xy[m + k, 0], xy[m + k, 1], s=220, marker="*", color=colour, edgecolors="black", linewidths=1)
        angle = 2 * np.pi * k / len(classes)  # labels fan out, so anchors close together stay readable
        ax.annotate(name, xy[m + k], xytext=(14 * np.cos(angle), 14 * np.sin(angle)), textcoords="offset points",
                    fontsize=9, weight="bold", color=colour, ha="left" if np.cos(angle) >= 0 else "right")
    ax.set_title(f"{method}: {m} recent faces (dots) and {len(classes)} text anchors (stars)", fontsize=10)
    return fig


def message_html(message: str, note: str = "") -> str:
    extra = f"<div style='opacity:0.8'>{html.escape(note)}</div>" if note else ""
    return f"<div class='kefer-message'><p>{html.escape(message)}</p>{extra}</div>"


def bars_html(title: str, classes: list, columns: list, row: int, top: int, note: str = "") -> str:
    """A table with one bar per class and column for face ``row``. Probability bars are to scale
    (0..1); similarity bars stretch from this face's lowest to its highest value so that small
    differences show, and the numbers give the true values."""
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h, _, _ in columns)
    widths = []
    for _, values, is_probability in columns:
        v = values[row]
        spread = max(float(v.max() - v.min()), 1e-6)
        widths.append(75.0 * np.clip(v, 0, 1) if is_probability else 7.5 + 67.5 * (v - v.min()) / spread)
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
                     f"<td>{html.escape(name)}</td>{cells}</tr>")
    extra = f"<p style='opacity:0.8;font-size:0.9em'>{html.escape(note)}</p>" if note else ""
    return (f"<div class='kefer-bars'><p><b>{html.escape(title)}</b>: {html.escape(classes[top])}</p>{extra}"
            f"<table style='width:100%'><tr><th style='text-align:left'>class</th>{head}</tr>"
            f"{''.join(lines)}</table></div>")


def safely(fn):
    """Run a button callback; an unexpected error is logged here and shown as a one-line message."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            traceback.print_exc()
            raise gr.Error(f"Something went wrong: {err}", print_exception=False) from err
    return wrapper


def build_demo(recognizer, *, note: str = "", device: str = "cpu", detect_every: int = 3,
               photo_recognizer=None) -> gr.Blocks:
    """The app around a recogniser from ``kefer.load`` (or None: faces are found but not scored).

    photo_recognizer: scores uploaded photos (default: ``recognizer``), e.g. a slower, more accurate model.
    note: a line shown under the title (e.g. which models, or why there is none).
    detect_every: MTCNN runs on every n-th webcam frame; the boxes are reused in between.
    """
    app = App(recognizer, device=device, detect_every=detect_every, photo_recognizer=photo_recognizer)
    prompts = app.default_prompts

    def session_of(state):
        return state if state is not None else Session(app)

    def on_frame(frame, state, smoothing, relative):
        session = session_of(state)
        if frame is None:
            return gr.skip(), gr.skip(), session
        try:
            annotated, bars = session.process_frame(frame, smoothing, relative)
        except Exception as err:  # keep the stream alive and say what happened
            traceback.print_exc()
            return frame, message_html(f"Could not process this frame: {err}"), session
        return annotated, bars, session

    def on_select(state, evt: gr.SelectData):
        session = session_of(state)
        session.select_at(*evt.index[:2])
        return session

    @safely
    def on_record(state):
        session = session_of(state)
        if app.rec is None:
            return NO_MODEL, session
        session.neutral.start(time.monotonic())
        return session.neutral.message + " (The webcam must be streaming.)", session

    def photo_outputs(session, messages):
        gallery, bars, table = session.photo_views()
        faceless = [p.name for p in session.photos if not p.faces]
        if faceless:
            messages = messages + [f"No face found in {', '.join(faceless)}: you can score the whole "
                                   f"image as one face."]
        if not session.photos and not messages:
            messages = ["Upload one or more photos."]
        return ("\n\n".join(html.escape(m) for m in messages), gr.update(visible=bool(faceless)),
                gallery, bars, table, session)

    @safely
    def on_upload(paths, state):
        session = session_of(state)
        return photo_outputs(session, session.add_photos(paths or []))

    @safely
    def on_whole(state):
        session = session_of(state)
        session.score_whole_images()
        return photo_outputs(session, [])

    def on_photo_select(state, evt: gr.SelectData):
        session = session_of(state)
        session.photo_index = evt.index
        return session.photo_bars(), session

    @safely
    def on_apply(template, classes, state):
        session = session_of(state)
        message = session.set_prompts(template, classes)
        gallery, bars, table = session.photo_views()
        return message, gallery, bars, table, session

    @safely
    def on_reset(state):
        session = session_of(state)
        if app.rec is None:
            return gr.skip(), gr.skip(), NO_MODEL, gr.skip(), gr.skip(), gr.skip(), session
        session.reset_prompts()
        gallery, bars, table = session.photo_views()
        return (prompts.template, "\n".join(prompts.classes), "Prompts reset to the checkpoint's own.",
                gallery, bars, table, session)

    @safely
    def on_tick(state):
        figure = state.plot() if state is not None else None
        return gr.skip() if figure is None else figure

    with gr.Blocks(title="kefer: facial expressions with knowledge", analytics_enabled=False) as demo:
        state = gr.State(None)
        gr.Markdown("# kefer: knowledge-enhanced facial expression recognition\n"
                    + html.escape(note or "") + ("" if recognizer else f"\n\n**{NO_MODEL}**"))
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Webcam", id="webcam"):
                        if app.rec is not None:
                            gr.Markdown(f"Scored by the model **{html.escape(app.rec.summary)}**.",
                                        elem_id="cam-model")
                        with gr.Row():
                            cam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", elem_id="cam")
                            cam_out = gr.Image(label="What the model sees (click a face to select it)",
                                               format="jpeg", interactive=False, elem_id="cam-out")
                        with gr.Row():
                            smoothing = gr.Checkbox(True, label="Temporal smoothing (last 5 frames)")
                            relative = gr.Checkbox(False, label="Relative to my neutral face")
                            record = gr.Button("Record my neutral face (3 s)", elem_id="record")
                        calibration = gr.Markdown(elem_id="calibration")
                        cam_bars = gr.HTML(elem_id="cam-bars")
                    with gr.Tab("Photos", id="photos"):
                        if app.photo_rec is not None:
                            gr.Markdown(f"Scored by the model **{html.escape(app.photo_rec.summary)}**.",
                                        elem_id="photo-model")
                        files = gr.File(file_count="multiple", file_types=["image"], label="Photos",
                                        elem_id="upload")
                        photo_message = gr.Markdown(elem_id="photo-message")
                        whole = gr.Button("Score the whole image as one face", visible=False, elem_id="whole")
                        gallery = gr.Gallery(label="Faces found", interactive=False, columns=3, elem_id="gallery")
                        photo_bars = gr.HTML(elem_id="photo-bars")
                        photo_table = gr.Markdown()
            with gr.Column(scale=2):
                plot = gr.Plot(label="Recent faces and text anchors", show_label=False, elem_id="map")
                with gr.Accordion("Prompts", open=True):
                    paper = gr.Dropdown(PAPER_TEMPLATES, value=None, label="The paper's templates")
                    template = gr.Textbox(prompts.template if prompts else "", label="Template (must contain [CLS])",
                                          elem_id="template")
                    classes = gr.Textbox("\n".join(prompts.classes) if prompts else "", lines=8,
                                         label="Class names, one per line (new ones are zero-shot)",
                                         elem_id="classes")
                    with gr.Row():
                        apply = gr.Button("Apply", variant="primary", elem_id="apply")
                        reset = gr.Button("Reset", elem_id="reset")
                    prompt_message = gr.Markdown(elem_id="prompt-message")
        timer = gr.Timer(PLOT_SECONDS)

        cam.stream(on_frame, [cam, state, smoothing, relative], [cam_out, cam_bars, state], stream_every=0.1,
                   concurrency_limit=2, concurrency_id="frames", show_progress="hidden")
        cam_out.select(on_select, [state], [state], show_progress="hidden")
        record.click(on_record, [state], [calibration, state])
        photo_out = [photo_message, whole, gallery, photo_bars, photo_table, state]
        files.change(on_upload, [files, state], photo_out)
        whole.click(on_whole, [state], photo_out)
        gallery.select(on_photo_select, [state], [photo_bars, state], show_progress="hidden")
        paper.input(lambda t: t, [paper], [template])
        apply.click(on_apply, [template, classes, state], [prompt_message, gallery, photo_bars, photo_table, state])
        reset.click(on_reset, [state], [template, classes, prompt_message, gallery, photo_bars, photo_table, state])
        timer.tick(on_tick, [state], [plot], show_progress="hidden")
    return demo
