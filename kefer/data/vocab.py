"""A shared class-name vocabulary, so models trained on one dataset can be tested on another."""
from __future__ import annotations

# FER+ order; the 7 basic expressions plus contempt.
EXPRESSIONS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]

ALIASES = {
    "happy": "happiness", "joy": "happiness",
    "sad": "sadness",
    "angry": "anger",
    "surprised": "surprise",
    "fearful": "fear", "afraid": "fear",
    "disgusted": "disgust",
    "contemptuous": "contempt",
    "calm": "neutral",
}


def canonical(name: str) -> str:
    """Map a dataset's label name (any case, common synonyms) onto the shared vocabulary."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def neutral_index(classes) -> int | None:
    """Index of the 'neutral' class (the paper's nu), or None when the classes have none."""
    classes = list(classes)
    return classes.index("neutral") if "neutral" in classes else None
