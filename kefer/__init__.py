"""kefer: knowledge-enhanced facial expression recognition.

A visual encoder is trained so that each face matches frozen text embeddings of expression
prompts; see README.md and ../shared/METHOD.md.
"""
__version__ = "0.1.0"
__all__ = ["Recognizer", "load", "__version__"]


def __getattr__(name: str):
    """``kefer.load`` and ``kefer.Recognizer``, imported on first use: ``import kefer`` stays light,
    and ``python -m kefer.operating`` runs a module that the package has not imported already."""
    if name in ("Recognizer", "load"):
        from . import recognizer
        return getattr(recognizer, name)
    raise AttributeError(f"module 'kefer' has no attribute {name!r}")
