"""The one parser of encoder names, visual and text (in the spirit of timm's ``parse_model_name``)."""
from __future__ import annotations

CLIP_HELP = "clip:<model>/<tag|file|random>"


def parse_encoder_name(name: str) -> tuple[str, str, str | None]:
    """An encoder name -> (kind, model, tag).

    - ``clip:ViT-B-16/openai`` -> ``("clip", "ViT-B-16", "openai")``: an open_clip model and its
      pretrained tag, weights file or ``random``;
    - ``timm:resnet18.a1_in1k`` -> ``("timm-hub", "resnet18", "a1_in1k")``: timm's published
      weights (tag None: timm's default);
    - ``facenet-casia`` -> ``("registry", "facenet-casia", None)``: kefer's pretrained registry;
    - anything else, e.g. ``resnet18`` -> ``("timm", "resnet18", None)``: a timm architecture.

    Raises ValueError for a ``clip:`` name without ``/<tag>``.
    """
    prefix, sep, rest = name.partition(":")
    if sep and prefix == "clip":
        model, slash, tag = rest.partition("/")
        if not (model and slash and tag):
            raise ValueError(f"Unknown encoder {name!r}: a CLIP encoder is named {CLIP_HELP}, "
                             f"e.g. clip:ViT-B-16/openai.")
        return "clip", model, tag
    if sep and prefix == "timm":
        model, _, tag = rest.partition(".")
        return "timm-hub", model, tag or None
    from .registry import REGISTRY

    return ("registry" if name in REGISTRY else "timm"), name, None
