"""The app's event handlers: thin adapters from gradio events to a tab's ``Session``.

Each handler receives the tab's Session from ``gr.State`` (created per tab by a factory) and
returns gradio values; all logic lives in ``session.py``/``photos.py``.
"""
from __future__ import annotations

import functools
import html
import logging

import gradio as gr

from .render import NO_MODEL, faces_table, message_html, template_text
from .session import App, Session

log = logging.getLogger(__name__)


def safely(fn):
    """Run a button callback; an unexpected error is logged here and shown as a one-line message."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:
            log.exception("app event failed")
            raise gr.Error(f"Something went wrong: {err}", print_exception=False) from err
    return wrapper


def session_key(request) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


class Handlers:
    """Callbacks bound to the shared ``App``; see ``layout.build_demo`` for what each is wired to."""

    def __init__(self, app: App):
        self.app = app

    def new_session(self) -> Session:
        return Session(self.app)

    def on_frame(self, frame, session: Session, smoothing: bool, use_reference: bool, request: gr.Request = None):
        """A webcam frame -> (annotated frame, bars, calibration status or skip, session)."""
        self.app.register(session_key(request), session)
        if frame is None:
            return gr.skip(), gr.skip(), gr.skip(), session
        try:
            view = session.process_frame(frame, smoothing, use_reference)
        except Exception as err:  # keep the stream alive and say what happened
            log.exception("app event failed")
            return frame, message_html(f"Could not process this frame: {err}"), gr.skip(), session
        return view.image, view.bars, view.status if view.status_changed else gr.skip(), session

    def on_select(self, session: Session, evt: gr.SelectData):
        session.select_at(*evt.index[:2])

    @safely
    def on_record(self, session: Session, request: gr.Request = None):
        self.app.register(session_key(request), session)
        return session.record_neutral()

    def photo_outputs(self, session: Session, messages: list):
        """-> (message, whole-image button, gallery, bars, table, faces as JSON, session)."""
        album = session.album
        messages = messages + album.messages()
        if not album.photos and not messages:
            messages = ["Upload one or more photos."]
        faceless = any(not p.faces for p in album.photos)
        rows = album.rows()
        return ("\n\n".join(html.escape(m) for m in messages), gr.update(visible=faceless), album.gallery(),
                album.bars(), faces_table(rows), rows, session)

    @safely
    def analyse_photos(self, photos, session: Session, request: gr.Request = None):
        """Upload photos: every face found, scored, shown as a tile with its label."""
        self.app.register(session_key(request), session)
        return self.photo_outputs(session, session.add_photos(photos or []))

    @safely
    def score_whole_images(self, session: Session):
        session.score_whole_images()
        return self.photo_outputs(session, [])

    def on_photo_select(self, session: Session, evt: gr.SelectData):
        session.album.selected = evt.index
        return session.album.bars()

    @safely
    def reprompt(self, template: str, classes: str, session: Session, request: gr.Request = None):
        """New prompts for this tab: -> (message, anchor report, gallery, bars, table, faces as JSON, session)."""
        self.app.register(session_key(request), session)
        message = session.set_prompts(template, classes)
        _, _, gallery, bars, table, rows, _ = self.photo_outputs(session, [])
        return message, session.report_html(), gallery, bars, table, rows, session

    @safely
    def on_operating(self, balanced: bool, abstain: bool, session: Session, request: gr.Request = None):
        """The operating-point checkboxes: -> (gallery, bars, table, faces as JSON, session) re-scored;
        the webcam follows from its next frame."""
        self.app.register(session_key(request), session)
        session.set_operating(balanced, abstain)
        _, _, gallery, bars, table, rows, _ = self.photo_outputs(session, [])
        return gallery, bars, table, rows, session

    @safely
    def reset(self, session: Session):
        """Back to the checkpoint's prompts: -> (template, classes, message, anchor report, gallery, bars, table,
        JSON, session)."""
        if self.app.rec is None:
            return (gr.skip(),) * 2 + (NO_MODEL,) + (gr.skip(),) * 5 + (session,)
        session.reset_prompts()
        prompts = self.app.default_prompts
        _, _, gallery, bars, table, rows, _ = self.photo_outputs(session, [])
        return (template_text(prompts), "\n".join(prompts.classes), "Prompts reset to the checkpoint's own.",
                session.report_html(), gallery, bars, table, rows, session)

    @safely
    def on_tick(self, session: Session):
        """The map timer: -> (the map, or skip when nothing changed; the text encoder's state)."""
        figure = session.plot()
        status = self.app.text_status
        shown = status != session.text_status_shown
        session.text_status_shown = status
        return gr.skip() if figure is None else figure, status if shown else gr.skip()

    def on_unload(self, request: gr.Request = None):
        self.app.close(session_key(request))
