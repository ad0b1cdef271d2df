"""The template sets training may use or must refuse, named in one place (``TEMPLATE_SETS``).

``paper``: the paper's 9 wordings; ``wide``: those and 20 more, for text augmentation; ``held-out``
and ``tuning``: never trained on (training refuses them), so that a model's behaviour on wordings it
never saw can be measured (``kefer lab templates``).
"""
from __future__ import annotations

from ..text import PAPER_TEMPLATES

# Measure wordings a model never saw; written before any model was scored with them (docs/RESULTS.md 8b).
HELD_OUT_TEMPLATES = [
    "A face showing [CLS].",
    "A portrait that expresses [CLS].",
    "An image of [CLS] on a human face.",
    "Someone whose face shows [CLS].",
    "A close-up photo of a face with [CLS].",
    "The emotion on this face is [CLS].",
    "A picture of someone showing [CLS].",
    "Facial expression: [CLS].",
    "A snapshot of a person whose expression shows [CLS].",
    "[CLS] is what this face expresses.",
    "A cropped face that displays [CLS].",
    "A grayscale photo of a face expressing [CLS].",
]
# Choose how an unseen wording becomes anchors, on validation (docs/results/wording-rule.md).
TUNING_TEMPLATES = [
    "Expression: [CLS].",
    "The face of someone in [CLS].",
    "A passport-style picture showing [CLS].",
    "Someone who looks like they feel [CLS].",
    "An emotional face: [CLS].",
    "A black and white image of a person displaying [CLS].",
    "This face conveys [CLS].",
    "A low-resolution face with an expression of [CLS].",
    "Here the person shows clear signs of [CLS].",
    "A close shot of a human face, [CLS].",
    "The subject's facial expression indicates [CLS].",
    "[CLS], as seen on a person's face.",
    "A photograph capturing [CLS].",
    "Someone's face full of [CLS].",
    "What this person feels is [CLS].",
    "A woman or a man whose look says [CLS].",
]
# Text augmentation (--template wide): the paper's 9 and 20 more, none nearer a held-out wording than
# that wording's nearest paper template (tests/test_text.py).
WIDE_TEMPLATES = PAPER_TEMPLATES + [
    "Her face shows [CLS].",
    "His face shows [CLS].",
    "A headshot showing [CLS].",
    "[CLS].",
    "An expression of [CLS].",
    "A look of [CLS] on someone's face.",
    "Someone showing [CLS].",
    "The person in the photo feels [CLS].",
    "A man or a woman in a state of [CLS].",
    "A selfie of someone feeling [CLS].",
    "The mood here is [CLS].",
    "Feeling [CLS].",
    "A webcam frame of a person with [CLS].",
    "An actor posing [CLS].",
    "Eyes and mouth that signal [CLS].",
    "Pure [CLS].",
    "A still from a video: a person in [CLS].",
    "A person with [CLS] written all over them.",
    "A child or an adult in [CLS].",
    "Clearly [CLS].",
]
TEMPLATE_SETS = {"paper": PAPER_TEMPLATES, "wide": WIDE_TEMPLATES, "held-out": HELD_OUT_TEMPLATES,
                 "tuning": TUNING_TEMPLATES}


def expand_templates(values: list[str]) -> list[str]:
    """Each value a template or the name of a set (``TEMPLATE_SETS``), in order, duplicates dropped."""
    return list(dict.fromkeys(t for v in values for t in TEMPLATE_SETS.get(v, [v])))


