"""Visual encoders through timm, projection into the text space, encoder weight files."""
import pytest
import timm
import torch

from kefer.models.network import KEFERModel
from kefer.models.factory import create_encoder, load_encoder_weights
from kefer.models import parse_encoder_name


@pytest.mark.parametrize("name, parsed", [
    ("clip:ViT-B-16/openai", ("clip", "ViT-B-16", "openai")),
    ("clip:ViT-B-32/random", ("clip", "ViT-B-32", "random")),
    ("clip:ViT-B-16//data/w.pt", ("clip", "ViT-B-16", "/data/w.pt")),
    ("timm:resnet18.a1_in1k", ("timm-hub", "resnet18", "a1_in1k")),
    ("timm:vit_base_patch16_224.augreg2_in21k_ft_in1k", ("timm-hub", "vit_base_patch16_224", "augreg2_in21k_ft_in1k")),
    ("timm:resnet18", ("timm-hub", "resnet18", None)),
    ("facenet-casia", ("registry", "facenet-casia", None)),
    ("msceleb-swin-t", ("registry", "msceleb-swin-t", None)),
    ("resnet18", ("timm", "resnet18", None)),
    ("swin_tiny_patch4_window7_224", ("timm", "swin_tiny_patch4_window7_224", None)),
])
def test_parse_encoder_name(name, parsed):
    assert parse_encoder_name(name) == parsed


@pytest.mark.parametrize("name", ["clip:ViT-B-16", "clip:/openai", "clip:ViT-B-16/"])
def test_a_clip_name_needs_model_and_tag(name):
    with pytest.raises(ValueError, match=r"clip:<model>/<tag\|file\|random>"):
        parse_encoder_name(name)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown encoder"):
        create_encoder("resnet-eighteen", 64)


def test_projection_maps_into_the_text_dimension():
    text = torch.nn.functional.normalize(torch.randn(8, 384), dim=-1)
    model = KEFERModel(create_encoder("resnet18", 64), 8, text).eval()
    f = model(torch.randn(2, 3, 64, 64))
    assert f.shape == (2, 384)
    assert model.logits(f).shape == (2, 8)
    assert model.transform(f).shape == (2, 384)


def test_classifier_baseline_has_a_head_and_no_text():
    model = KEFERModel(create_encoder("resnet18", 64), 7, None).eval()
    assert model.is_classifier and model.transform is None
    assert model.logits(model(torch.randn(2, 3, 64, 64))).shape == (2, 7)


def test_swin_tiny_at_112_px_with_patch_2():
    enc = create_encoder("swin_tiny_patch4_window7_224", 112, patch_size=2)
    assert enc(torch.randn(1, 3, 112, 112)).shape == (1, enc.num_features)


def test_encoder_weights_file_is_loaded_and_reported(tmp_path):
    source = timm.create_model("resnet18", num_classes=10)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.pth")
    enc = create_encoder("resnet18", 64)
    report = load_encoder_weights(enc, tmp_path / "w.pth")
    assert report["loaded"] == len(enc.state_dict())
    assert report["unexpected"] == ["fc.bias", "fc.weight"]
    assert torch.equal(enc.conv1.weight, source.conv1.weight)


def test_incompatible_weights_file_is_refused(tmp_path):
    torch.save({"layer.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="matches none"):
        load_encoder_weights(create_encoder("resnet18", 64), tmp_path / "other.pt")


def test_clip_image_tower_encoder():
    """`clip:<model>/random` builds the tower (a control); a tag whose weights are not on disk is
    a clear error, never random weights."""
    encoder = create_encoder("clip:ViT-B-32/random", 224)
    assert encoder.num_features == 512 and len(encoder.mean) == 3
    with torch.no_grad():
        assert encoder(torch.randn(1, 3, 224, 224)).shape == (1, 512)
    with pytest.raises(ValueError, match="224"):
        create_encoder("clip:ViT-B-32/random", 112)
    with pytest.raises(FileNotFoundError, match="clip:ViT-B-32"):
        create_encoder("clip:ViT-B-32/no-such-weights.pt", 224)


def test_timm_published_weights_fail_clearly_offline(monkeypatch):
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: the test sets the constant it reads."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="--encoder-weights"):
        create_encoder("timm:resnet18.a1_in1k", 64)
    bare = create_encoder("timm:resnet18.a1_in1k", 64, pretrained=False)  # as a checkpoint rebuilds it
    assert bare.num_features == 512
