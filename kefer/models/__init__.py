"""Visual encoders by name.

- ``names.py``: the one parser of encoder names (``clip:``, ``timm:``, registry and timm names).
- ``encoders.py``: the feature-extractor modules and timm construction.
- ``registry.py``: kefer's offline pretrained encoders, by name (see docs/pretrained.md).
- ``converters/``: source weight files -> state dicts of the registry's architectures.
"""
from .names import parse_encoder_name

__all__ = ["parse_encoder_name"]
