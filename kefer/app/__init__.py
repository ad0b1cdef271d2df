"""The Gradio app: what the model sees (faces, labels, similarity bars) and why (embedding map, prompts).

    from kefer.app import build_demo
    build_demo(kefer.load("fast"), photo_recognizer=kefer.load("accurate", flip=True)).launch()

Modules, one job each: ``session`` (per-tab state, no gradio), ``photos`` (a tab's uploads),
``render`` (HTML bars, messages, face tiles), ``map`` (the embedding map figure), ``handlers``
(gradio events -> session), ``layout`` (the Blocks). Scoring is the library's
(``kefer.analysis``, ``kefer.scoring``, ``kefer.operating``, ``kefer.calibration``).
"""
from .layout import build_demo
from .render import NO_MODEL
from .session import App, FrameView, Session

__all__ = ["build_demo", "App", "Session", "FrameView", "NO_MODEL"]
