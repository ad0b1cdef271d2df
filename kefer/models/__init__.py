"""Visual models: encoders by name, and the network kefer trains.

- ``factory.py``: ``create_encoder(name, img_size)``, the one encoder factory.
- ``names.py``: the one parser of encoder names (``clip:``, ``timm:``, registry and timm names).
- ``encoders.py``: the feature-extractor modules and timm construction.
- ``registry.py``: kefer's offline pretrained encoders, by name (see docs/pretrained.md).
- ``converters/``: source weight files -> state dicts of the registry's architectures.
- ``network.py``: ``KEFERModel``, encoder + projection + G (Eq. 6) + the baseline's head.
"""
from .factory import create_encoder, load_encoder_weights
from .names import parse_encoder_name
from .network import KEFERModel, TransformationNet, mirror_average

__all__ = ["KEFERModel", "TransformationNet", "create_encoder", "load_encoder_weights", "mirror_average",
           "parse_encoder_name"]
