"""A shared class-name vocabulary, so models trained on one dataset can be tested on another."""
from __future__ import annotations

# FER+ order; the 7 basic expressions plus contempt.
EXPRESSIONS = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]

# Each expression's adjective, the class-name variant of text augmentation ("This person is happy.").
ADJECTIVES = {"neutral": "neutral", "happiness": "happy", "surprise": "surprised", "sadness": "sad",
              "anger": "angry", "disgust": "disgusted", "fear": "fearful", "contempt": "contemptuous"}

ALIASES = {**{adj: noun for noun, adj in ADJECTIVES.items() if adj != noun},
           "joy": "happiness", "afraid": "fear", "calm": "neutral"}


def canonical(name: str) -> str:
    """Map a dataset's label name (any case, common synonyms) onto the shared vocabulary."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def adjective(name: str) -> str:
    """The adjective of an expression name ("happiness" -> "happy"); other names are returned as given."""
    return ADJECTIVES.get(canonical(name), name)


def adjectives(classes) -> list[str] | None:
    """The classes' adjectives, the second name form of text augmentation; None where none has one
    or two would share one (e.g. both "happy" and "happiness" are classes)."""
    forms = [adjective(c) for c in classes]
    return forms if forms != list(classes) and len(set(forms)) == len(forms) else None


def neutral_index(classes) -> int | None:
    """Index of the 'neutral' class (the paper's nu), or None when the classes have none."""
    classes = list(classes)
    return classes.index("neutral") if "neutral" in classes else None
