"""The gradio Blocks: ``build_demo(recognizer) -> gr.Blocks``.

Components and their wiring only; the handlers are in ``handlers.py``, the state in
``session.py``. The HTTP API has three named endpoints (``/analyse_photos``, ``/reprompt``,
``/reset``); the rest (webcam frames, clicks, the map timer) are private to the page.
"""
from __future__ import annotations

import html
import os
from types import SimpleNamespace

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage analytics calls

import gradio as gr  # noqa: E402

from ..text import PAPER_TEMPLATES  # noqa: E402
from .handlers import Handlers  # noqa: E402
from .map import EMPTY, EMPTY_REFERENCE, placeholder  # noqa: E402
from .render import NO_MODEL, template_label, template_text  # noqa: E402
from .session import App  # noqa: E402

ALL_NINE = "All 9, averaged (see RESULTS 8b)"


def template_choice(choice: str) -> str:
    """The template box's text for a choice in the paper's-templates menu (all 9: one per line)."""
    return "\n".join(PAPER_TEMPLATES) if choice == ALL_NINE else choice

PLOT_SECONDS = 3.0      # the map is redrawn by a timer, never in the per-frame path
STREAM_EVERY = 0.1      # seconds between webcam frames sent (about 10 per second)
STREAM_TIME_LIMIT = 120  # seconds a tab holds a stream slot before it queues again
STREAMS = 2             # tabs streaming at once; more wait in the queue
STATE_TTL = 1800        # seconds a tab's state lives after its last update
TITLE = "kefer: knowledge-enhanced facial expression recognition"
PRIVATE = {"api_visibility": "private"}


def header(app: App, note: str) -> str:
    """The page's header: which model and backend scores the webcam and the photos."""
    lines = [f"# {TITLE}"]
    if app.rec is not None:
        lines.append(f"Webcam: **{html.escape(app.rec.summary)}**. Photos: **{html.escape(app.photo_rec.summary)}**. "
                     f"{len(app.rec.classes)} classes.")
    if note:
        lines.append(html.escape(note))
    if app.rec is None:
        lines.append(f"**{NO_MODEL}**")
    return "\n\n".join(lines)


def webcam_tab(app: App) -> SimpleNamespace:
    with gr.Tab("Webcam", id="webcam"):
        if app.rec is not None:
            gr.Markdown(f"Scored by **{html.escape(app.rec.summary)}**.", elem_id="cam-model")
        with gr.Row():
            cam = gr.Image(sources=["webcam"], streaming=True, label="Webcam", elem_id="cam")
            cam_out = gr.Image(label="What the model sees (click a face to select it)", format="jpeg",
                               interactive=False, elem_id="cam-out")
        with gr.Row():
            smoothing = gr.Checkbox(True, label="Temporal smoothing (last 5 frames)")
            use_reference = gr.Checkbox(True, label="Use my neutral face", elem_id="use-reference",
                                        info="Once recorded, your faces are read relative to your own neutral face")
            record = gr.Button("Record my neutral face (3 s)", elem_id="record")
        calibration = gr.Markdown(elem_id="calibration")
        bars = gr.HTML(elem_id="cam-bars")
    return SimpleNamespace(cam=cam, out=cam_out, smoothing=smoothing, use_reference=use_reference, record=record,
                           calibration=calibration, bars=bars)


def photos_tab(app: App) -> SimpleNamespace:
    with gr.Tab("Photos", id="photos"):
        if app.photo_rec is not None:
            gr.Markdown(f"Scored by **{html.escape(app.photo_rec.summary)}**.", elem_id="photo-model")
        files = gr.File(file_count="multiple", file_types=["image"], label="Photos", elem_id="upload")
        message = gr.Markdown(elem_id="photo-message")
        whole = gr.Button("Score the whole image as one face", visible=False, elem_id="whole")
        gallery = gr.Gallery(label="Faces found (click one for its bars)", interactive=False, columns=5,
                             object_fit="contain", height="auto", elem_id="gallery")
        bars = gr.HTML(elem_id="photo-bars")
        table = gr.Markdown(elem_id="photo-table")
        with gr.Accordion("Faces as JSON", open=False):
            faces = gr.JSON(elem_id="photo-json")
    return SimpleNamespace(files=files, message=message, whole=whole, gallery=gallery, bars=bars, table=table,
                           json=faces)


def operating_panel(app: App) -> SimpleNamespace:
    """This tab's operating point: the checkboxes start on where the model stores one, and are
    greyed out where it stores none."""
    with gr.Row():
        balanced = gr.Checkbox(app.can_balance, label="Balance rare expressions", interactive=app.can_balance,
                               info=None if app.can_balance else "this model stores no balance strength",
                               elem_id="balance")
        abstain = gr.Checkbox(app.can_abstain, label="Say 'uncertain' when unsure", interactive=app.can_abstain,
                              info=None if app.can_abstain else "this model stores no abstain margin",
                              elem_id="abstain")
    return SimpleNamespace(balanced=balanced, abstain=abstain)


def prompts_panel(app: App) -> SimpleNamespace:
    prompts = app.default_prompts
    figure = placeholder(("No model: nothing to map." if app.rec is None else
                          EMPTY_REFERENCE if app.map is not None else EMPTY))
    plot = gr.Plot(figure, label="Embedding map", show_label=False, format="jpeg", elem_id="map")  # the figure has its title
    operating = operating_panel(app)
    with gr.Accordion("Prompts", open=True):
        paper = gr.Dropdown([*PAPER_TEMPLATES, ALL_NINE], value=None, label="The paper's templates")
        template = gr.Textbox(template_text(prompts), lines=4, max_lines=8, label=template_label(prompts),
                              elem_id="template")
        classes = gr.Textbox("\n".join(prompts.classes) if prompts else "", lines=8,
                             label="Class names, one per line (new ones are zero-shot)", elem_id="classes")
        with gr.Row():
            apply = gr.Button("Apply", variant="primary", elem_id="apply")
            reset = gr.Button("Reset", elem_id="reset")
        text_status = gr.Markdown(app.text_status, elem_id="text-status")
        message = gr.Markdown(elem_id="prompt-message")
        report = gr.HTML(elem_id="anchor-report")   # after Apply: how far the anchors sit from the trained ones
    return SimpleNamespace(plot=plot, paper=paper, template=template, classes=classes, apply=apply, reset=reset,
                           text_status=text_status, message=message, report=report, operating=operating)


def wire(demo: gr.Blocks, h: Handlers, state, cam, photos, side, timer) -> None:
    """Connect the components to the handlers."""
    cam.cam.stream(h.on_frame, [cam.cam, state, cam.smoothing, cam.use_reference],
                   [cam.out, cam.bars, cam.calibration, state], stream_every=STREAM_EVERY,
                   time_limit=STREAM_TIME_LIMIT, concurrency_limit=STREAMS, concurrency_id="frames",
                   show_progress="hidden", **PRIVATE)
    cam.out.select(h.on_select, [state], None, show_progress="hidden", **PRIVATE)
    cam.record.click(h.on_record, [state], [cam.calibration], **PRIVATE)
    photo_out = [photos.message, photos.whole, photos.gallery, photos.bars, photos.table, photos.json, state]
    photos.files.change(h.analyse_photos, [photos.files, state], photo_out, api_name="analyse_photos")
    photos.whole.click(h.score_whole_images, [state], photo_out, **PRIVATE)
    photos.gallery.select(h.on_photo_select, [state], [photos.bars], show_progress="hidden", **PRIVATE)
    side.paper.input(template_choice, [side.paper], [side.template], **PRIVATE)
    rescored = [photos.gallery, photos.bars, photos.table, photos.json, state]
    for box in (side.operating.balanced, side.operating.abstain):
        box.input(h.on_operating, [side.operating.balanced, side.operating.abstain, state], rescored, **PRIVATE)
    side.apply.click(h.reprompt, [side.template, side.classes, state], [side.message, side.report, *rescored],
                     api_name="reprompt")
    side.reset.click(h.reset, [state], [side.template, side.classes, side.message, side.report, *rescored], api_name="reset")
    timer.tick(h.on_tick, [state], [side.plot, side.text_status], show_progress="hidden", **PRIVATE)
    demo.unload(h.on_unload)


def build_demo(recognizer, *, note: str = "", device: str = "cpu", detect_every: int = 3,
               photo_recognizer=None) -> gr.Blocks:
    """The app around a recogniser from ``kefer.load`` (or None: faces are found but not scored).

    photo_recognizer: scores uploaded photos (default: ``recognizer``), e.g. a slower, more accurate
    model. note: an extra line under the title (e.g. why there is no model). detect_every: MTCNN
    runs on every n-th webcam frame; the boxes are reused in between. The text encoder starts
    loading in the background, so the first Apply of new prompts does not wait for it.
    """
    app = App(recognizer, device=device, detect_every=detect_every, photo_recognizer=photo_recognizer)
    handlers = Handlers(app)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        state = gr.State(handlers.new_session, time_to_live=STATE_TTL, delete_callback=lambda s: s.close())
        gr.Markdown(header(app, note), elem_id="header")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs():
                    cam = webcam_tab(app)
                    photos = photos_tab(app)
            with gr.Column(scale=2):
                side = prompts_panel(app)
        timer = gr.Timer(PLOT_SECONDS)
        wire(demo, handlers, state, cam, photos, side, timer)
    for fn in demo.fns.values():   # the state's factory runs as a load event: not an API endpoint
        if getattr(fn.fn, "__func__", None) is Handlers.new_session:
            fn.api_visibility = "private"
    demo.kefer_app = app   # for tests and tools: the shared state behind the page
    app.start_text_encoder()
    return demo
