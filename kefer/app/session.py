"""Per-tab state without gradio: what all tabs share (``App``) and what each tab owns (``Session``).

``App`` holds what every browser tab only reads: the recognisers, the face detectors, the photo
analyser and the text encoder (loaded in the background at start-up). A ``Session`` is one tab:
its prompts and operating point (balance, abstain: each recogniser's stored one, on or off), its
webcam stream (``analysis.StreamAnalyzer``: tracking, smoothing, scoring), its neutral
calibration, recent embeddings for the map and its photos (``photos.PhotoAlbum``). The app
computes no scores itself: faces come scored from ``kefer.analysis`` (labels, "uncertain"
included), the recorded neutral face from ``kefer.calibration`` (scored by ``kefer.scoring``), the operating point from ``kefer.operating``.
"""
from __future__ import annotations

import html
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..analysis import ImageAnalyzer, StreamAnalyzer
from ..calibration import NeutralCalibration
from ..embedding_map import find_map
from ..faces import FaceDetector, FaceTracker, class_colour, draw, to_rgb
from ..operating import describe
from ..scoring import Prompts, anchor_report
from ..text import PLACEHOLDER
from .map import embedding_map, reference_figure
from .photos import PhotoAlbum
from .render import GREY, NO_MODEL, anchor_report_html, bars_html, message_html

HISTORY = 150          # webcam face embeddings kept per session for the embedding map


class App:
    """What all sessions share and only read: the recognisers (or None), detectors, text encoder.

    ``recognizer`` scores webcam frames (a fast model); ``photo_recognizer`` (default: the same)
    uploaded photos, where accuracy matters more than speed. Both must share the classes and the
    text encoder: until a tab edits its prompts each model scores against its own trained prompts
    (their templates may differ); edited prompts are encoded once and scored by both. Webcam frames
    are searched at 320 px for faces of 40+ px there; photos at up to 1280 px for faces of 20+ px.
    ``map``: the webcam model's reference map (``kefer.embedding_map.find_map``; None: there is none);
    ``photos_on_map``: whether the photo model's faces can be placed on it too (the map names it).
    """

    def __init__(self, recognizer, device: str = "cpu", detect_every: int = 3, photo_recognizer=None):
        self.rec = recognizer
        self.photo_rec = photo_recognizer or recognizer
        check_same_text(recognizer, self.photo_rec)
        self.detector = FaceDetector(device=device, crop_size=recognizer.input_size if recognizer else 112)
        self.photo_detector = FaceDetector(device=device, crop_size=self.photo_rec.input_size if self.photo_rec
                                           else 112, detect_side=1280, min_face_size=20)
        self.image_analyzer = ImageAnalyzer(self.photo_rec, self.photo_detector) if self.photo_rec else None
        self.detect_every = detect_every
        self.default_prompts = recognizer.trained_prompts if recognizer is not None else None
        self.map = find_map(recognizer)
        self.photos_on_map = self.map is not None and self.map.fits(self.photo_rec.meta)
        self.text_loader = None
        self.text_error = None
        self.sessions = {}            # gradio session hash -> Session, to clean up when a tab closes
        self.sessions_lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self   # shared and read-only: gradio deep-copies state values, never copy the models

    @property
    def can_balance(self) -> bool:
        """Whether a recogniser stores a balance strength (the tabs' checkbox is then on by default)."""
        return any(r is not None and r.operating.strength is not None for r in (self.rec, self.photo_rec))

    @property
    def can_abstain(self) -> bool:
        """Whether a recogniser stores an abstain margin."""
        return any(r is not None and r.operating.margin is not None for r in (self.rec, self.photo_rec))

    @property
    def editable(self) -> bool:
        return self.rec is not None and not self.rec.trained_prompts.is_classifier

    def start_text_encoder(self) -> threading.Thread | None:
        """Load the text encoder in a background thread (seconds), so the first Apply is quick."""
        if self.editable and self.text_loader is None:
            self.text_loader = threading.Thread(target=self._load_text_encoder, name="kefer-text", daemon=True)
            self.text_loader.start()
        return self.text_loader

    def _load_text_encoder(self) -> None:
        try:
            self.rec.text_encoder  # noqa: B018  (the property loads it, under the recogniser's lock)
        except Exception as err:  # shown in the prompts panel; Apply then says what failed
            self.text_error = f"{type(err).__name__}: {err}"

    @property
    def text_status(self) -> str:
        if not self.editable:
            return "" if self.rec is None else "This model's prompts cannot be edited (a classifier baseline)."
        if self.text_error:
            return f"Text encoder failed to load: {self.text_error}"
        if self.text_loader is not None and self.text_loader.is_alive():
            return "Loading the text encoder… (Apply waits for it)"
        return "Text encoder ready."

    def encode(self, template: str | list[str], classes: list, raw: bool = False) -> Prompts:
        """Prompts from the checkpoint's text encoder (``Recognizer.encode_prompts``; ``raw``: an unseen
        wording's embeddings as they stand, not projected); the shared recogniser is not changed.
        Raises ValueError for a bad template or class list."""
        return self.rec.encode_prompts(template=template, classes=classes,
                                       unseen=(lambda anchors: anchors) if raw else None)

    def register(self, key: str | None, session: "Session") -> None:
        if key:
            with self.sessions_lock:
                self.sessions[key] = session

    def close(self, key: str | None) -> None:
        """A tab closed: drop its session's photos, tracks and embeddings now."""
        with self.sessions_lock:
            session = self.sessions.pop(key, None)
        if session is not None:
            session.close()


def check_same_text(rec, other) -> None:
    if rec is None or other is rec:
        return
    if rec.meta["text_encoder"] != other.meta["text_encoder"] or rec.classes != other.classes:
        raise ValueError(f"The webcam model {rec.name!r} and the photo model {other.name!r} need the same "
                         f"classes and text encoder (they have {rec.classes} / {rec.meta['text_encoder']} "
                         f"and {other.classes} / {other.meta['text_encoder']}).")


@dataclass
class FrameView:
    """What one webcam frame shows: the annotated frame, the bars, the calibration status, and
    the label drawn on each face's box (the bars' headline shows the selected one's)."""

    image: np.ndarray
    bars: str
    status: str
    status_changed: bool
    labels: list = field(default_factory=list)


@dataclass
class Scored:
    """Faces' scores as shown: per face its class index (bold in the bars), label text and box
    colour; the bars' columns, a note."""

    labels: np.ndarray
    texts: list
    colours: list
    columns: list
    note: str = ""


class Session:
    """One browser tab: its prompts, webcam stream, calibration, embeddings and photos."""

    def __init__(self, app: App):
        self.app = app
        self.prompts = app.default_prompts   # the tab's class side, edited or the checkpoint's
        self.balanced, self.abstain = app.can_balance, app.can_abstain
        self.operate()
        if app.rec is not None:
            self.stream = StreamAnalyzer(app.rec, app.detector, every=app.detect_every)
        else:
            self.tracker = FaceTracker(app.detector, every=app.detect_every)
        self.neutral = NeutralCalibration()
        self.shown_status = ""
        self.selected_track = None
        self.frame_faces = []
        self.history = deque(maxlen=HISTORY)        # embeddings [d] of recent webcam faces (photos: the album's)
        self.lock = threading.Lock()  # the map timer reads history while the stream appends to it
        self.version = 0   # bumped when history or prompts change; the map timer redraws only then
        self.plotted = -1
        self.album = PhotoAlbum(app)
        self.text_status_shown = ""
        self.report = None   # kefer.scoring.AnchorReport of the applied prompts (None: the checkpoint's own)

    def __deepcopy__(self, memo):
        return self   # gradio deep-copies a new tab's state value: each tab gets its own from the factory

    def close(self) -> None:
        with self.lock:
            self.history.clear()
        self.album.clear()
        self.frame_faces = []

    # ---- operating point ----------------------------------------------------------------------
    def operate(self) -> None:
        """The prompts each recogniser scores this tab's faces against: ``prompts`` (each
        recogniser's own while the tab has not edited them) under its own stored operating point,
        balanced and abstaining as the tab's checkboxes say."""
        edited = self.prompts is not self.app.default_prompts
        self.stream_prompts, self.photo_prompts = (
            None if r is None or self.prompts is None
            else r.operate(self.prompts if edited else r.trained_prompts, self.balanced, self.abstain)
            for r in (self.app.rec, self.app.photo_rec))

    def set_operating(self, balanced: bool, abstain: bool) -> None:
        """The checkboxes: balance rare expressions, say 'uncertain' when unsure; photos are re-scored."""
        self.balanced, self.abstain = bool(balanced), bool(abstain)
        self.operate()
        self.album.rescore(self.photo_prompts)
        self.version += 1

    # ---- scores as shown ----------------------------------------------------------------------
    def scored(self, faces: list, note: str = "") -> Scored:
        """FaceResults -> labels, label texts, colours and bar columns (cosine, probability)."""
        cos = np.stack([f.cosines for f in faces])
        probs = np.stack([f.probabilities for f in faces])
        return Scored(np.array([f.index for f in faces]), [f.label_text for f in faces],
                      [GREY if f.uncertain else class_colour(f.index) for f in faces],
                      [("cosine", cos, False), ("probability", probs, True)], note)

    def reference(self, prompts: Prompts, use: bool) -> tuple:
        """(the recorded reference the webcam's faces are scored against, or None; whether each track's
        own estimate is used instead; what the bars say). By default a recorded neutral face, else each
        face's neutral estimated from its own frames (better than plain scores on CK+ pseudo-tracks:
        docs/RESULTS.md 11); the model must store a rule and know 'neutral'."""
        recorded = self.neutral.reference
        if not use:
            return None, False, "Reference: off (plain scores). Tick 'Use my neutral face' to read faces relative to it."
        if prompts.reference_rule is None or prompts.neutral_index is None:
            return None, False, ("Reference: none. This model stores no rule for it" if prompts.neutral_index is not None
                                 else "Reference: none. The classes have no 'neutral'") + "; plain scores."
        if recorded is None:
            return None, True, (f"Reference: estimated from each face's own neutral frames (after "
                                f"{self.stream.estimates.warmup} of them). Record your neutral face for a better one.")
        return recorded, False, (f"Reference: your recorded neutral face ({recorded.count} frames), for every face in "
                                 f"view. Untick 'Use my neutral face' for plain scores.")

    # ---- webcam -------------------------------------------------------------------------------
    def process_frame(self, frame, smoothing: bool = True, use_reference: bool = True) -> FrameView:
        """One webcam frame [H, W, 3] -> what the tab shows (``FrameView``): detection, tracking,
        smoothing and scoring (``StreamAnalyzer``, relative to the recorded neutral face where there
        is one and ``use_reference``), calibration, drawing, bars."""
        prompts = self.stream_prompts  # one snapshot: another event may replace it meanwhile
        rgb = to_rgb(frame)
        if self.app.rec is None:
            faces = self.tracker.update(rgb)
            image = draw(rgb, faces, ["face"] * len(faces), [GREY] * len(faces))
            return self.view(image, message_html(NO_MODEL) if faces else message_html("No face in view."))
        self.stream.reference, self.stream.estimate, note = self.reference(prompts, use_reference)
        faces = self.stream.update(rgb, prompts, smoothing)
        self.frame_faces = faces
        selected = self.selected_index(faces)
        self.neutral.add(faces[selected].embedding if faces else None, time.monotonic())
        self.remember([f.embedding for f in faces])
        if not faces:
            return self.view(rgb, message_html("No face in view."))
        s = self.scored(faces, note)
        image = draw(rgb, faces, s.texts, s.colours, selected)
        title = f"Face {selected + 1} of {len(faces)}" + (" (largest)" if self.selected_track is None else "")
        bars = bars_html(title, s.texts[selected], prompts.classes, s.columns, selected, int(s.labels[selected]),
                         s.note, prompts.zero_shot, describe(prompts))
        return self.view(image, bars, s.texts)

    def view(self, image, bars: str, labels=()) -> FrameView:
        status = self.neutral.message
        changed, self.shown_status = status != self.shown_status, status
        return FrameView(image, bars, status, changed, list(labels))

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

    def record_neutral(self) -> str:
        """The button: start a recording; its status then follows the stream's frames."""
        if self.app.rec is None:
            return NO_MODEL
        self.neutral.start()
        self.shown_status = self.neutral.message
        return self.shown_status

    def remember(self, embeddings: list) -> None:
        if len(embeddings):
            with self.lock:
                self.history.extend(embeddings)
            self.version += 1

    # ---- photos -------------------------------------------------------------------------------
    def add_photos(self, paths: list) -> list[str]:
        """Read, detect and score uploads; one message per unreadable file (its name only)."""
        messages = self.album.add(paths, self.photo_prompts)
        self.version += 1
        return messages

    def score_whole_images(self) -> None:
        self.album.score_whole_images(self.photo_prompts)
        self.version += 1

    # ---- prompts ------------------------------------------------------------------------------
    def set_prompts(self, template: str, classes_text: str) -> str:
        """Validate and apply edited prompts; returns a message (an error starts with 'Error')."""
        if self.app.rec is None:
            return "Error: no model is loaded, so there are no prompts to edit."
        templates = list(dict.fromkeys(t.strip() for t in (template or "").splitlines() if t.strip()))
        classes = list(dict.fromkeys(c.strip() for c in (classes_text or "").replace(",", "\n").splitlines()
                                     if c.strip()))
        if not templates or any(PLACEHOLDER not in t for t in templates):
            return f"Error: each template must contain {PLACEHOLDER}, where the class name goes."
        if not classes:
            return "Error: give at least one class name."
        unseen = sum(t not in self.app.rec.trained_prompts.templates for t in templates)
        try:
            prompts = self.app.encode(templates, classes)
            raw = self.app.encode(templates, classes, raw=True) if unseen else None
        except ValueError as err:
            return f"Error: {err}"
        self.prompts = prompts
        self.report = anchor_report(prompts, self.app.default_prompts, raw)
        self.operate()
        self.album.rescore(self.photo_prompts)
        self.version += 1
        note = (f" {unseen} wording(s) the model was not trained on, kept only along the class contrasts the model was trained on."
                if unseen else "")
        if len(templates) == 1:
            return f"Applied: {len(classes)} classes, template “{html.escape(templates[0])}”.{note}"
        return f"Applied: {len(classes)} classes, {len(templates)} templates averaged.{note}"

    def reset_prompts(self) -> None:
        self.prompts = self.app.default_prompts
        self.report = None
        self.operate()
        self.album.rescore(self.photo_prompts)
        self.version += 1

    def report_html(self) -> str:
        """The anchor report of the applied prompts as HTML ('' before an Apply and after Reset)."""
        return anchor_report_html(self.report)

    # ---- embedding map ------------------------------------------------------------------------
    def plot(self):
        """The embedding map as a matplotlib Figure, or None when nothing changed since the last one:
        recent webcam faces and the album's photo faces, on the reference map where there is one."""
        prompts = self.stream_prompts
        if self.version == self.plotted or prompts is None:
            return None
        self.plotted = self.version
        d = prompts.anchors.shape[1]
        with self.lock:
            webcam = np.array(self.history, dtype=np.float32).reshape(-1, d)
        photos = np.array(self.album.embeddings(), dtype=np.float32).reshape(-1, d)
        ref, rec = self.app.map, self.app.rec
        if ref is None:
            faces = np.concatenate([webcam, photos])
            predicted = rec.score(faces, prompts)[1].argmax(axis=1) if len(faces) else None
            return embedding_map(faces, prompts.anchors, prompts.classes, predicted,
                                 np.arange(len(faces)) >= len(webcam),
                                 note=f"No reference map for {rec.name}: faces and anchors laid out afresh.")
        note = "" if self.app.photos_on_map or not len(photos) else (
            f"Photo faces are not shown: the photo model {self.app.photo_rec.name} has no place on this map.")
        if not self.app.photos_on_map:
            photos = photos[:0]
        faces = np.concatenate([photos, webcam])    # oldest first: the latest webcam face is drawn last
        predicted = rec.score(faces, prompts)[1].argmax(axis=1) if len(faces) else np.zeros(0, int)
        colours = [map_colour(prompts.classes[k], k, ref.classes) for k in predicted]
        return reference_figure(ref, ref.place(faces), colours, np.arange(len(faces)) < len(photos), rec.name, note)


def map_colour(name: str, index: int, map_classes: tuple) -> int:
    """The colour index of a predicted class on the reference map: that of the same class name in the
    map's classes, else one after them (a zero-shot class)."""
    return map_classes.index(name) if name in map_classes else len(map_classes) + index
