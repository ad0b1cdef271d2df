"""Prompts and text encoders (the 'knowledge')."""
import pytest
import torch
import torch.nn.functional as F

from kefer.text import DEFAULT_TEMPLATE, PAPER_TEMPLATES, build_prompt, check_template, contrast_basis, encode_classes, create_text_encoder, project_wording
from kefer.train.template_sets import HELD_OUT_TEMPLATES, TUNING_TEMPLATES, WIDE_TEMPLATES
from kefer.text_encoders import MiniLMTextEncoder
from kefer.lab.wordings import adapt_wording, parse_wording, transfer_wording


def test_prompt_uses_the_right_article():
    assert build_prompt(DEFAULT_TEMPLATE, "anger") == "A photo of a person making an anger facial expression."
    assert build_prompt(DEFAULT_TEMPLATE, "happiness") == "A photo of a person making a happiness facial expression."
    assert build_prompt("An ID photo of a [CLS] facial expression.", "fear") == "An ID photo of a fear facial expression."
    assert build_prompt("This person is [CLS].", "surprise") == "This person is surprise."


def test_paper_has_nine_templates_all_with_placeholder():
    assert len(PAPER_TEMPLATES) == 9 and PAPER_TEMPLATES[-1] == DEFAULT_TEMPLATE
    for t in PAPER_TEMPLATES:
        check_template(t)


def test_held_out_templates_are_unique_have_the_placeholder_and_are_not_the_papers():
    assert len(set(HELD_OUT_TEMPLATES)) == len(HELD_OUT_TEMPLATES) == 12
    assert not set(HELD_OUT_TEMPLATES) & set(PAPER_TEMPLATES)
    for t in HELD_OUT_TEMPLATES:
        check_template(t)


def test_tuning_templates_are_unique_have_the_placeholder_and_are_in_no_other_set():
    assert len(set(TUNING_TEMPLATES)) == len(TUNING_TEMPLATES) == 16
    assert not set(TUNING_TEMPLATES) & set(WIDE_TEMPLATES + HELD_OUT_TEMPLATES)
    for t in TUNING_TEMPLATES:
        check_template(t)


def test_projection_keeps_only_the_trained_class_contrasts_of_a_new_wording():
    g = torch.Generator().manual_seed(0)
    d, classes = 16, 4
    contrasts = torch.linalg.qr(torch.randn(d, classes - 1, generator=g))[0].T          # [3, d] orthonormal
    coords = torch.randn(classes, classes - 1, generator=g)
    coords = coords - coords.mean(0)
    means = torch.randn(5, d, generator=g)                                                # 5 trained wordings
    sets = torch.stack([m + 0.5 * coords @ contrasts for m in means], 1)                 # [K, T, d]
    basis = contrast_basis(sets)
    assert basis.shape == (classes - 1, d)
    assert torch.allclose(basis @ basis.T, torch.eye(classes - 1), atol=1e-5)
    assert torch.allclose(basis.T @ basis @ contrasts.T, contrasts.T, atol=1e-5)          # spans the contrasts
    outside = torch.randn(classes, d, generator=g)
    outside = outside - outside @ contrasts.T @ contrasts                                 # what training never saw
    new = F.normalize(means[0] + coords @ contrasts + outside, dim=-1)
    projected = project_wording(new, basis)
    mean = new.mean(0)
    assert torch.allclose(projected, F.normalize(mean + (new - mean) @ contrasts.T @ contrasts, dim=-1), atol=1e-5)
    assert torch.allclose(projected.norm(dim=-1), torch.ones(classes), atol=1e-6)
    inside = means[1] + coords @ contrasts                      # a trained wording (before normalising): nothing to drop
    assert torch.allclose(project_wording(inside, basis), F.normalize(inside, dim=-1), atol=1e-5)
    base = F.normalize(sets.mean(1), dim=-1)
    assert torch.equal(adapt_wording(new, "raw"), new)                     # exact: "raw" hands back `new` itself
    assert torch.allclose(adapt_wording(new, "project", base, basis), projected)
    assert torch.allclose(adapt_wording(new, "transfer", base, basis), transfer_wording(new, base))
    assert torch.allclose(adapt_wording(new, "project+transfer", base, basis), transfer_wording(projected, base))
    with pytest.raises(ValueError, match="Unknown wording method"):
        adapt_wording(new, "rotate", base, basis)
    assert contrast_basis(sets, multiple=2).shape == (classes - 1, d)       # the deviations' rank: 3, not 6
    many = torch.randn(classes, 6, d, generator=g)                           # 6 unrelated wordings
    wide = contrast_basis(many, multiple=2)
    assert wide.shape == (2 * (classes - 1), d)
    assert torch.allclose(wide[: classes - 1], contrast_basis(many), atol=1e-5)   # the leading directions first
    one_class = contrast_basis(sets[:1])                                     # no contrast to keep: as it stands
    assert one_class.shape == (0, d)
    # renormalised (F.normalize of a unit vector): equal to the last bit only on some CPUs
    torch.testing.assert_close(project_wording(new[:1], one_class), new[:1], atol=1e-6, rtol=0)


def test_wording_names_parse_with_an_optional_projection_rank():
    import argparse

    from kefer.lab.wordings import wording_name

    assert parse_wording("raw") == ("raw", 1) and parse_wording("project") == ("project", 1)
    assert parse_wording("project@4") == ("project", 4) and parse_wording("project+transfer@2") == ("project+transfer", 2)
    for bad in ("transfer@2", "project@0", "project@x", "project@", "projected", "project@\u0663", "project@\u00b2"):
        with pytest.raises(ValueError, match="Unknown wording method"):
            parse_wording(bad)
    with pytest.raises(TypeError, match="a name such as"):
        parse_wording(False)                  # the old encode_prompts(template, classes, transfer=False), positionally
    assert wording_name("project@2") == "project@2"
    with pytest.raises(argparse.ArgumentTypeError, match="project@2"):
        wording_name("rotate")


def test_transfer_keeps_the_new_wordings_class_directions_on_the_trained_common_part_and_spread():
    g = torch.Generator().manual_seed(0)
    common, other = torch.randn(2, 16, generator=g)
    deviations = torch.randn(4, 16, generator=g)
    deviations = deviations - deviations.mean(0)
    base = common + deviations
    # another wording: its own common part, twice the spread, the same class-specific directions
    assert torch.allclose(transfer_wording(other + 2 * deviations, base), F.normalize(base, dim=-1), atol=1e-6)
    unit = F.normalize(base, dim=-1)
    assert torch.allclose(transfer_wording(unit, unit), unit, atol=1e-6)            # the trained wording: as it is
    swapped = transfer_wording(unit.flip(0), unit)                                   # other classes' directions
    assert torch.allclose(swapped.norm(dim=-1), torch.ones(4)) and not torch.allclose(swapped, unit, atol=1e-3)
    one = transfer_wording(F.normalize(other, dim=-1)[None], unit[:1])               # one class: no deviation
    assert torch.allclose(one, unit[:1], atol=1e-6)


def test_template_without_placeholder_is_rejected():
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        check_template("A photo of a face.")


def test_unknown_text_encoder_is_rejected():
    with pytest.raises(ValueError, match="Unknown text encoder"):
        create_text_encoder("bert-large")


def test_clip_without_weights_fails_clearly_never_random():
    with pytest.raises(FileNotFoundError, match="minilm"):
        create_text_encoder("clip:ViT-B-16//nonexistent/weights.pt")


@pytest.mark.parametrize("on_disk, chosen", [(False, "minilm"), (True, "clip:ViT-B-16/openai")])
def test_auto_picks_clip_only_where_its_weights_are_on_disk(on_disk, chosen, monkeypatch, caplog):
    """Whatever this machine's Hugging Face cache holds: 'auto' asks clip_weights_on_disk and follows it."""
    import kefer.text_encoders as text

    asked = []
    monkeypatch.setattr(text, "clip_weights_on_disk", lambda model, tag: asked.append((model, tag)) or on_disk)
    monkeypatch.setattr(text, "CLIPTextEncoder", lambda model, tag: type("Stub", (), {"id": f"clip:{model}/{tag}"})())
    monkeypatch.setattr(text, "MiniLMTextEncoder", type("Stub", (), {"id": "minilm"}))
    with caplog.at_level("INFO", logger="kefer"):
        encoder = create_text_encoder("auto")
    assert asked == [("ViT-B-16", "openai")] and encoder.id == chosen
    assert f"'auto' -> {chosen}" in caplog.text


def test_clip_weights_on_disk_reads_the_hugging_face_cache(monkeypatch, tmp_path):
    import huggingface_hub

    import kefer.models.clip as text

    looked_up = []
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, f: looked_up.append(repo) or (str(tmp_path / f) if f.endswith(".bin") else None))
    assert text.clip_weights_on_disk("ViT-B-16", "openai") and looked_up[0].startswith("timm/")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f: None)
    assert not text.clip_weights_on_disk("ViT-B-16", "openai")
    assert text.clip_weights_on_disk("ViT-B-16", str(tmp_path))   # a weights path that exists


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder()


def test_no_training_wording_sits_nearer_a_held_out_one_than_the_papers_do(minilm):
    """The held-out templates stay unseen under --template wide: each extra training wording is no
    closer (MiniLM, class prompts averaged) to any held-out wording than its nearest paper template."""
    from kefer.train.data.ferplus import CLASSES

    def wordings(templates):   # [T, d]
        return F.normalize(torch.stack([encode_classes(minilm, CLASSES, [t])[0].mean(0) for t in templates]), dim=-1)

    held_out = wordings(HELD_OUT_TEMPLATES)
    ceiling = (wordings(PAPER_TEMPLATES) @ held_out.T).max(0).values          # [12]
    extra = wordings(WIDE_TEMPLATES[len(PAPER_TEMPLATES):]) @ held_out.T      # [20, 12]
    assert (extra <= ceiling + 1e-4).all(), (extra - ceiling).max(1)
    assert wordings(["A human face showing [CLS]."]) @ held_out[0] > ceiling[0]   # a near-copy would fail


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


def test_orthogonal_prototypes_are_fixed_and_orthonormal():
    enc = create_text_encoder("orthogonal")
    prompts = [build_prompt(DEFAULT_TEMPLATE, c) for c in ["neutral", "anger", "fear", "contempt"]]
    emb = enc.encode(prompts)
    assert emb.shape == (4, 384)
    torch.testing.assert_close(emb @ emb.T, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(enc.encode(prompts), emb)                  # the same every time
    assert not torch.allclose(enc.encode(prompts[::-1])[-1], emb[-1])     # a plain seeded draw is not


def test_class_embeddings_are_cached_by_encoder_and_prompts(tmp_path, monkeypatch):
    import kefer.text as text

    monkeypatch.setenv("KEFER_CACHE", str(tmp_path))
    emb, prompts, text_id = text.class_embeddings("orthogonal", ["neutral", "anger"], [DEFAULT_TEMPLATE])
    assert text_id == "orthogonal" and prompts[1] == ["A photo of a person making an anger facial expression."]
    assert len(list((tmp_path / "text").glob("*.safetensors"))) == 1

    def no_encoder(spec):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(text, "create_text_encoder", no_encoder)
    again, _, _ = text.class_embeddings("orthogonal", ["neutral", "anger"], [DEFAULT_TEMPLATE])
    torch.testing.assert_close(again, emb)
    with pytest.raises(AssertionError, match="cache"):   # other prompts are another entry
        text.class_embeddings("orthogonal", ["neutral", "fear"], [DEFAULT_TEMPLATE])
