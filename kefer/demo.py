"""Moved: the Gradio app is the package ``kefer.app`` (this name stays for old imports)."""
from .app import NO_MODEL, App, Session, build_demo  # noqa: F401
