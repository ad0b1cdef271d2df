"""kefer: knowledge-enhanced facial expression recognition.

A visual encoder is trained so that each face matches frozen text embeddings of expression
prompts; see README.md and docs/architecture.md.

    import kefer
    rec = kefer.load()                  # the shipped "accurate" model
    faces = rec.analyze("group.jpg")    # every face: box, probabilities, label

Layers (imports point one way, tests/test_layers.py): this package is the product (loading,
recognising, analysing, faces, scoring, backends, checkpoints, models, text encoders, the app);
``kefer.train`` trains and evaluates; ``kefer.lab`` holds the research studies; ``kefer.cli`` is
the ``kefer`` command on top of all three.
"""
from .recognizer import Recognizer, load

__version__ = "0.1.0"
__all__ = ["Recognizer", "load", "__version__"]
