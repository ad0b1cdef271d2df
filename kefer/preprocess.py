"""Preprocessing for inference: a face crop resized and normalised as the model was trained."""
from __future__ import annotations

from torchvision.transforms import v2 as T
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(img_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> T.Compose:
    """RGB PIL image -> float tensor [3, img_size, img_size], normalised."""
    return T.Compose([
        T.ToImage(),
        T.Resize((img_size, img_size), antialias=True),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean, std),
    ])
