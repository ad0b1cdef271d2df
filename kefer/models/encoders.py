"""Feature-extractor modules: images [B, 3, H, W] -> pooled features [B, F], and timm construction."""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
from facenet_pytorch import InceptionResnetV1

# FaceNet's "fixed image standardisation" (x - 127.5) / 128 on 0..255 pixels, written for [0, 1] input.
FACENET_MEAN = (0.5, 0.5, 0.5)
FACENET_STD = (128 / 255,) * 3


def timm_features(name: str, img_size: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """timm's ``name`` without classifier, for ``img_size`` input where the architecture takes an
    ``img_size`` (CNNs take any size and have none): forward -> pooled features [B, num_features]."""
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=img_size, **kwargs)
    except TypeError:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)


class Encoder(nn.Module):
    """A feature extractor: images [B, 3, H, W] (normalised with ``mean``/``std``) -> features [B, F].

    With ``frozen_bn`` every BatchNorm layer stays in eval mode, even under ``train()``: its
    statistics are constants (e.g. folded into the conv biases of a converted graph), not
    statistics of real batches. Its affine parameters still train, as per-channel scale and bias.
    """

    def __init__(self, body: nn.Module, num_features: int, mean: tuple, std: tuple,
                 default_img_size: int, frozen_bn: bool):
        super().__init__()
        self.body = body
        self.num_features = num_features
        self.mean, self.std = tuple(mean), tuple(std)
        self.default_img_size = default_img_size
        self.frozen_bn = frozen_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


class FaceNetFeatures(InceptionResnetV1):
    """facenet-pytorch's InceptionResnetV1 up to its global average pool: [B, 3, H, W] -> [B, 1792].

    The 512-d bottleneck (``last_linear``, ``last_bn``) and the dropout are removed.
    """

    num_features = 1792

    def __init__(self):
        super().__init__(classify=False)
        del self.dropout, self.last_linear, self.last_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a, self.conv2d_3b,
                      self.conv2d_4a, self.conv2d_4b, self.repeat_1, self.mixed_6a, self.repeat_2,
                      self.mixed_7a, self.repeat_3, self.block8):
            x = layer(x)
        return self.avgpool_1a(x).flatten(1)


class SwinFaceFeatures(nn.Module):
    """The face-recognition Swin-T of the official KE2NT script: timm's Swin-T at 112 px with patch
    size 2 (stage grids 56/28/14/7, as the 224-px model) and its 512-d identity head kept as the
    feature output: [B, 3, 112, 112] -> [B, 512]."""

    num_features = 512

    def __init__(self):
        super().__init__()
        self.swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=112,
                                      patch_size=2, num_classes=512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.swin(x)
