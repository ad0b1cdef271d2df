"""One tab's uploaded photos: every face found, scored and shown as its own tile.

Faces come from ``kefer.analysis.ImageAnalyzer`` (boxes in the original photo's pixels, clipped
to it); the photo is kept downscaled (at most ``faces.MAX_SIDE`` per side) for the tiles.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np

from ..analysis import FaceResult
from ..faces import ImageError, class_colour, read_image
from ..operating import describe
from ..scoring import Prompts
from .render import GREY, NO_MODEL, bars_html, face_tile, letterbox, message_html

LOW_CONFIDENCE = 0.6   # a whole image scored as one face with a lower top probability is flagged unreliable


@dataclass
class Photo:
    """One upload: its name, rgb [h, w, 3] (downscaled), ``scale`` original pixels per rgb pixel,
    and its faces: FaceResults (boxes in original pixels), or unscored Faces without a model."""

    name: str
    source: object        # the path it was read from
    rgb: np.ndarray
    scale: float
    faces: list = field(default_factory=list)
    whole: bool = False
    prompts: Prompts | None = None   # what the faces were scored against

    def rgb_box(self, face) -> np.ndarray:
        """A face's box in ``rgb``'s pixels (for its tile)."""
        return np.asarray(face.box) / (self.scale if isinstance(face, FaceResult) else 1.0)


def unreliable(face) -> bool:
    """A whole image scored as one face whose top probability is low."""
    return isinstance(face, FaceResult) and face.whole_image and face.confidence < LOW_CONFIDENCE


class PhotoAlbum:
    """Upload, score, re-score and show one tab's photos; ``tiles`` lists (photo, face index or
    None for a photo without faces) in gallery order, and ``selected`` indexes it."""

    def __init__(self, app):
        self.app = app
        self.photos: list[Photo] = []
        self.selected = 0

    def add(self, paths: list, prompts: Prompts | None) -> list[str]:
        """Read, detect and score uploaded files (replacing the previous ones); returns one message
        per unreadable file, naming the file only."""
        self.photos, self.selected, messages, readable = [], 0, [], []
        for path in paths:
            name = os.path.basename(str(path))
            try:
                rgb, scale = read_image(path)
            except ImageError as err:
                messages.append(str(err))
                continue
            self.photos.append(Photo(name, path, rgb, scale))
            readable.append(path)
        self._analyse(self.photos, readable, prompts, whole_if_none=False)
        return messages

    def _analyse(self, photos: list[Photo], images: list, prompts, whole_if_none: bool) -> None:
        if not photos:
            return
        if self.app.image_analyzer is None:  # no model: faces found, not scored
            for photo in photos:
                photo.faces = self.app.photo_detector.faces(photo.rgb)
            return
        for photo, faces in zip(photos, self.app.image_analyzer.analyze_many(images, prompts, whole_if_none)):
            photo.faces, photo.prompts = faces, prompts
            photo.whole = bool(faces) and faces[0].whole_image

    def score_whole_images(self, prompts: Prompts | None) -> None:
        """Score every photo without a face as one face (the whole image, centre-cropped)."""
        todo = [p for p in self.photos if not p.faces]
        self._analyse(todo, [p.source for p in todo], prompts, whole_if_none=True)

    def rescore(self, prompts: Prompts | None) -> None:
        """Score the faces found against new prompts (no detection, no encoder: the embeddings are kept)."""
        rec = self.app.photo_rec
        for photo in self.photos:
            faces = [f for f in photo.faces if isinstance(f, FaceResult)]
            if not faces or photo.prompts is prompts or prompts is None:
                continue
            cos, probs = rec.score(np.stack([f.embedding for f in faces]), prompts)
            photo.faces = [dataclasses.replace(f, cosines=cos[i], probabilities=probs[i], classes=prompts.classes,
                                               abstain_margin=prompts.abstain_margin)
                           for i, f in enumerate(faces)]
            photo.prompts = prompts

    def embeddings(self) -> list[np.ndarray]:
        return [f.embedding for p in self.photos for f in p.faces if isinstance(f, FaceResult)]

    @property
    def tiles(self) -> list[tuple[Photo, int | None]]:
        return [(p, i) for p in self.photos for i in (range(len(p.faces)) if p.faces else [None])]

    def gallery(self) -> list[tuple[np.ndarray, str]]:
        """One (tile [TILE, TILE, 3], caption) per face, and per photo without a face."""
        out = []
        for photo, i in self.tiles:
            if i is None:
                out.append((letterbox(photo.rgb), f"{photo.name}: no face found"))
                continue
            face = photo.faces[i]
            scored = isinstance(face, FaceResult)
            colour = class_colour(face.index) if scored and not face.uncertain else GREY
            tile = letterbox(photo.rgb, colour) if photo.whole else face_tile(photo.rgb, photo.rgb_box(face), colour)
            out.append((tile, caption(photo, i)))
        return out

    def bars(self) -> str:
        """Bars of the selected tile's face."""
        tiles = self.tiles
        if not tiles:
            return ""
        photo, i = tiles[min(self.selected, len(tiles) - 1)]
        if i is None:
            return message_html(f"No face found in {photo.name}.")
        face = photo.faces[i]
        if not isinstance(face, FaceResult):
            return message_html(NO_MODEL)
        columns = [("cosine", face.cosines[None], False), ("probability", face.probabilities[None], True)]
        note = WHOLE_WARNING.format(p=face.confidence) if unreliable(face) else ""
        zero_shot = photo.prompts.zero_shot if photo.prompts else ()
        return bars_html(face_title(photo, i), face.label_text, face.classes, columns, 0, face.index, note, zero_shot,
                         describe(photo.prompts) if photo.prompts else "")

    def rows(self) -> list[dict]:
        """Plain values per face (the table, and the API's JSON): photo, face number, box in original
        pixels, probabilities, label."""
        rows = []
        for photo in self.photos:
            for i, face in enumerate(photo.faces):
                base = {"photo": photo.name, "face": i + 1, "whole_image": photo.whole}
                if isinstance(face, FaceResult):
                    rows.append({**base, **face.as_dict(), "unreliable": unreliable(face)})
                else:
                    box = dict(zip(("x0", "y0", "x1", "y1"), (round(float(v) * photo.scale, 1) for v in face.box)))
                    rows.append({**base, **box, "label": None})
        return rows

    def messages(self) -> list[str]:
        faceless = [p.name for p in self.photos if not p.faces]
        out = []
        if faceless:
            out.append(f"No face found in {', '.join(faceless)}: you can score the whole image as one face.")
        for photo in self.photos:
            if photo.faces and unreliable(photo.faces[0]):
                out.append(f"{photo.name}: " + WHOLE_WARNING.format(p=photo.faces[0].confidence))
        return out

    def clear(self) -> None:
        self.photos, self.selected = [], 0


WHOLE_WARNING = ("unreliable: no face was found, the whole image was scored as one face, and its top "
                 "probability is only {p:.2f}.")


def face_title(photo: Photo, i: int) -> str:
    return f"{photo.name}: whole image" if photo.whole else f"{photo.name}: face {i + 1} of {len(photo.faces)}"


def caption(photo: Photo, i: int) -> str:
    """'name · face 1: happiness 0.93' (with a warning for an unreliable whole-image score)."""
    face = photo.faces[i]
    where = "whole image" if photo.whole else f"face {i + 1}"
    if not isinstance(face, FaceResult):
        return f"{photo.name} · {where}"
    flag = " (unreliable)" if unreliable(face) else ""
    return f"{photo.name} · {where}: {face.label_text}{flag}"
