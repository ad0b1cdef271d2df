"""Training augmentation: the paper's recipe, and the options for faces that are not FER+ crops."""
from __future__ import annotations

import torch
from torchvision.transforms import v2 as T

from ..preprocess import IMAGENET_MEAN, IMAGENET_STD

AUTO_AUGMENT = {"none": None, "trivial": T.TrivialAugmentWide, "randaugment": T.RandAugment}


def train_transform(img_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, rotation: float = 10.0,
                    crop_area: float | None = None, auto_augment: str = "none", erasing: float = 0.5,
                    blur: float = 0.0) -> T.Compose:
    """RGB PIL image -> augmented float tensor [3, img_size, img_size], normalised.

    The defaults are the recipe's augmentation: flip, rotation, RandomCrop(padding=4) with p=0.5,
    random erasing. The other options target faces that are not FER+ crops (issue 15):
    ``crop_area`` S replaces the resize and padded crop by RandomResizedCrop(scale=(S, 1)): a crop of
    S to all of the image's area (aspect ratio 3/4 to 4/3), resized, i.e. tighter framings,
    ``auto_augment`` adds TrivialAugmentWide or RandAugment (lighting, contrast, shear), ``blur`` is
    the probability of a Gaussian blur (soft webcam frames), ``erasing`` that of random erasing.
    """
    if auto_augment not in AUTO_AUGMENT:
        raise ValueError(f"auto_augment {auto_augment!r}: choose one of {sorted(AUTO_AUGMENT)}")
    for name, p in (("erasing", erasing), ("blur", blur)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} is a probability in [0, 1], got {p}")
    if crop_area is None:
        resize = T.Resize((img_size, img_size), antialias=True)
        shift = [T.RandomApply([T.RandomCrop(img_size, padding=4)], p=0.5)]
    elif 0 < crop_area <= 1:
        resize, shift = T.RandomResizedCrop(img_size, scale=(crop_area, 1.0), antialias=True), []
    else:
        raise ValueError(f"crop_area is a fraction of the image's area in (0, 1], got {crop_area}")
    return T.Compose([
        T.ToImage(),
        resize,
        T.RandomHorizontalFlip(),
        T.RandomRotation(rotation),
        *shift,
        *([AUTO_AUGMENT[auto_augment]()] if auto_augment != "none" else []),
        *([T.RandomApply([T.GaussianBlur(5, sigma=(0.1, 2.0))], p=blur)] if blur > 0 else []),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean, std),
        *([T.RandomErasing(p=erasing, scale=(0.02, 0.25))] if erasing > 0 else []),
    ])

