"""open_clip models loaded offline, or a clear error naming the file to fetch: the text towers
(``kefer.text_encoders``) and image towers (``factory.CLIPImageEncoder``) both come from here."""
from __future__ import annotations

import os


def create_clip_model(model_name: str, weights: str, flag: str = "--text-encoder"):
    """An open_clip model with pretrained ``weights`` (a tag or a file). Raises FileNotFoundError
    naming the file it needs when they are not on disk; ``flag`` is the CLI flag the remedy names."""
    import open_clip

    spec = f"clip:{model_name}/{weights}"
    if not os.path.exists(weights) and weights not in open_clip.list_pretrained_tags_by_model(model_name):
        raise FileNotFoundError(
            f"{spec}: {weights!r} is neither a weights file nor a pretrained tag open_clip knows "
            f"for {model_name} ({open_clip.list_pretrained_tags_by_model(model_name)}).")
    try:
        return open_clip.create_model(model_name, pretrained=weights)
    except Exception as e:
        raise FileNotFoundError(
            f"Could not load CLIP weights for {spec}: {e}\n"
            f"It needs {clip_weights_hint(model_name, weights)}. Download it where there is "
            f"internet and pass its path as {flag} clip:{model_name}/<path>."
        ) from e


def clip_weights_hint(model_name: str, tag: str) -> str:
    """Human-readable name of the file that open_clip needs for ``model_name``/``tag``."""
    from open_clip import pretrained

    if os.path.exists(tag):
        return f"a readable open_clip weights file at {tag}"
    cfg = pretrained.get_pretrained_cfg(model_name, tag)
    if not cfg:
        return f"a pretrained tag that open_clip knows for {model_name} (see open_clip.list_pretrained())"
    if cfg.get("hf_hub"):
        repo = cfg["hf_hub"].rstrip("/")
        return f"open_clip_pytorch_model.bin from the Hugging Face repo {repo}"
    return f"the file at {cfg.get('url')}"


def clip_weights_on_disk(model_name: str, tag: str) -> bool:
    """True if the CLIP weights can be loaded without a network (a local file or the HF cache)."""
    if os.path.exists(tag):
        return True
    from huggingface_hub import try_to_load_from_cache
    from open_clip import pretrained

    cfg = pretrained.get_pretrained_cfg(model_name, tag)
    if not cfg.get("hf_hub"):
        return False
    repo = cfg["hf_hub"].rstrip("/")
    return any(
        isinstance(try_to_load_from_cache(repo, f), str)
        for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    )
