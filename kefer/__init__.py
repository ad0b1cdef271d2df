"""kefer: knowledge-enhanced facial expression recognition.

A visual encoder is trained so that each face matches frozen text embeddings of expression
prompts; see README.md and ../shared/METHOD.md.
"""
from .recognizer import Recognizer, load

__version__ = "0.1.0"
__all__ = ["Recognizer", "load", "__version__"]
