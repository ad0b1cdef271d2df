"""Prompts and text encoders (the 'knowledge')."""
import pytest
import torch

from kefer.text import (DEFAULT_TEMPLATE, PAPER_TEMPLATES, MiniLMTextEncoder, build_prompt,
                        check_template, encode_classes, load_text_encoder)


def test_prompt_uses_the_right_article():
    assert build_prompt(DEFAULT_TEMPLATE, "anger") == "A photo of a person making an anger facial expression."
    assert build_prompt(DEFAULT_TEMPLATE, "happiness") == "A photo of a person making a happiness facial expression."
    assert build_prompt("An ID photo of a [CLS] facial expression.", "fear") == "An ID photo of a fear facial expression."
    assert build_prompt("This person is [CLS].", "surprise") == "This person is surprise."


def test_paper_has_nine_templates_all_with_placeholder():
    assert len(PAPER_TEMPLATES) == 9 and PAPER_TEMPLATES[-1] == DEFAULT_TEMPLATE
    for t in PAPER_TEMPLATES:
        check_template(t)


def test_template_without_placeholder_is_rejected():
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        check_template("A photo of a face.")


def test_unknown_text_encoder_is_rejected():
    with pytest.raises(ValueError, match="Unknown text encoder"):
        load_text_encoder("bert-large")


def test_clip_without_weights_fails_clearly_never_random():
    with pytest.raises(FileNotFoundError, match="minilm"):
        load_text_encoder("clip:ViT-B-16//nonexistent/weights.pt")


def test_auto_falls_back_to_minilm_offline(capsys):
    encoder = load_text_encoder("auto")
    assert encoder.id == "minilm"
    assert "minilm" in capsys.readouterr().out


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder()


def test_minilm_embeddings_are_normalised_and_meaningful(minilm):
    e = minilm.encode(["a happy smiling face", "a joyful grinning face", "a tax form"])
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert (e[0] @ e[1]) > (e[0] @ e[2]) + 0.2


def test_multi_template_average_is_normalised_mean(minilm):
    templates = PAPER_TEMPLATES[:2]
    emb, prompts = encode_classes(minilm, ["anger", "fear"], templates)
    assert prompts[0] == ["This person is anger.", "A photo of an anger face."]
    single = minilm.encode(prompts[0])
    expected = torch.nn.functional.normalize(single.mean(0), dim=0)
    assert torch.allclose(emb[0], expected, atol=1e-5)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
