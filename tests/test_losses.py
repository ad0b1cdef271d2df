"""The losses against hand-computed values (METHOD.md, Eq. 4-11)."""
import math

import pytest
import torch
import torch.nn.functional as F

from kefer.train.losses import TAU, LossConfig, info_nce, knowledge_ce, self_contrast, similarity, total_loss, transformation_loss

# 2-D toy space: class 0 = neutral along x, class 1 along y, class 2 along the diagonal.
TEXT = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
NU = 0


def test_knowledge_ce_matches_softmax_of_cosines_over_tau():
    f = torch.tensor([[0.0, 2.0]])  # cos = (0, 1, 1/sqrt2)
    y = torch.tensor([1])
    cos = torch.tensor([0.0, 1.0, 1 / math.sqrt(2)])
    expected = -(cos[1] / 0.01 - torch.logsumexp(cos / 0.01, 0))
    assert knowledge_ce(f, TEXT, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_transformation_loss_zero_when_differences_align_and_two_when_opposite():
    y = torch.tensor([1, 2])
    delta_t = TEXT[y] - TEXT[NU]
    n = torch.randn(2, 2)
    assert transformation_loss(n + 3 * delta_t, n, TEXT, y, NU).item() == pytest.approx(0.0, abs=1e-6)
    assert transformation_loss(n - 0.5 * delta_t, n, TEXT, y, NU).item() == pytest.approx(2.0, abs=1e-6)


def test_transformation_loss_ignores_neutral_samples():
    y = torch.tensor([1, 0])
    f = torch.tensor([[0.0, 1.0], [5.0, -7.0]])
    n = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    # only sample 0 counts: f - n = (-1, 1) = t_1 - t_0 exactly
    assert transformation_loss(f, n, TEXT, y, NU).item() == pytest.approx(0.0, abs=1e-6)


def test_self_contrast_per_sample_by_hand():
    y = torch.tensor([1])
    f = torch.tensor([[0.0, 3.0]])   # cos(t1, f) = 1
    n = torch.tensor([[2.0, 0.0]])   # cos(t1, n) = 0
    assert self_contrast(f, n, TEXT, y, NU).item() == pytest.approx(2 - 1 + 0)


def test_self_contrast_pairwise_differs_from_per_sample():
    y = torch.tensor([1, 2])
    f = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    n = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s = 1 / math.sqrt(2)
    # per-sample: [2 - 1 + 0] and [2 - 1 + s]
    per_sample = ((2 - 1 + 0) + (2 - 1 + s)) / 2
    # pairwise over (i, j): anchor t_yi against f_j and n_j
    pairs = [2 - 1 + 0, 2 - s + 0, 2 - s + s, 2 - 1 + s]
    assert self_contrast(f, n, TEXT, y, NU, "per-sample").item() == pytest.approx(per_sample, rel=1e-5)
    assert self_contrast(f, n, TEXT, y, NU, "pairwise").item() == pytest.approx(sum(pairs) / 4, rel=1e-5)


def test_info_nce_by_hand():
    y = torch.tensor([1])
    f = torch.tensor([[0.0, 1.0]])
    assert info_nce(f, f.clone(), TEXT, y, NU).item() == pytest.approx(math.log(2), rel=1e-5)
    n = torch.tensor([[1.0, 0.0]])
    assert info_nce(f, n, TEXT, y, NU).item() == pytest.approx(math.log1p(math.exp(-100)), abs=1e-6)


def test_all_neutral_batch_gives_zero_and_finite_gradients():
    f = torch.randn(4, 2, requires_grad=True)
    y = torch.zeros(4, dtype=torch.long)
    transform = torch.nn.Linear(2, 2)
    loss, parts = total_loss(LossConfig(("ce", "t", "sc")), f, TEXT, y, NU, transform=transform)
    assert parts["t"].item() == 0.0 and parts["sc"].item() == 0.0   # exact: no non-neutral sample returns f.sum() * 0
    loss.backward()
    assert torch.isfinite(f.grad).all() and torch.isfinite(loss)


def test_total_is_weighted_sum():
    f = torch.randn(6, 2)
    y = torch.tensor([0, 1, 2, 1, 2, 0])
    g = torch.nn.Linear(2, 2)
    _, parts = total_loss(LossConfig(("ce", "t", "sc")), f, TEXT, y, NU, transform=g)
    loss, _ = total_loss(LossConfig(("ce", "t", "sc"), {"t": 0.5, "sc": 2.0}), f, TEXT, y, NU, transform=g)
    assert loss.item() == pytest.approx((parts["ce"] + 0.5 * parts["t"] + 2.0 * parts["sc"]).item(), rel=1e-5)


def test_soft_targets_change_only_the_cross_entropy_terms():
    f = torch.randn(6, 2)
    y = torch.tensor([0, 1, 2, 1, 2, 0])
    g = torch.nn.Linear(2, 2)
    cfg = LossConfig(("ce", "t", "sc"))
    _, hard = total_loss(cfg, f, TEXT, y, NU, transform=g)
    _, one_hot = total_loss(cfg, f, TEXT, y, NU, transform=g, soft=F.one_hot(y, 3).float())
    assert all(one_hot[k].item() == pytest.approx(hard[k].item(), rel=1e-5) for k in hard)
    mixed = 0.7 * F.one_hot(y, 3).float() + 0.1
    _, soft = total_loss(cfg, f, TEXT, y, NU, transform=g, soft=mixed)
    expected = -(mixed * (similarity(f, TEXT) / TAU).log_softmax(-1)).sum(-1).mean()
    assert soft["ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert soft["t"].item() == pytest.approx(hard["t"].item()) and soft["sc"].item() == pytest.approx(hard["sc"].item())


@pytest.mark.parametrize("terms", [(), ("bogus",), ("classifier", "ce"), ("ce", "sc", "infonce")])
def test_bad_loss_combinations_are_rejected(terms):
    with pytest.raises(ValueError):
        LossConfig(terms)


def test_prior_offset_is_the_scaled_log_frequency():
    from kefer.train.losses import prior_offset

    offset = prior_offset([0.75, 0.25], 0.5)
    torch.testing.assert_close(offset, 0.5 * torch.log(torch.tensor([0.75, 0.25])))
    assert prior_offset([0.5, 0.5], 0.0) is None
    with pytest.raises(ValueError, match="every class"):
        prior_offset([1.0, 0.0], 1.0)


def test_logit_adjusted_ce_asks_frequent_classes_for_a_larger_margin():
    """Adding log prior to the logits: a sample of the rare class costs more, a frequent one less,
    and a uniform offset changes nothing (softmax is shift-invariant)."""
    torch.manual_seed(0)
    f, text = torch.randn(6, 8), torch.randn(2, 8)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    offset = torch.log(torch.tensor([0.9, 0.1]))
    plain = knowledge_ce(f, text, y)
    torch.testing.assert_close(knowledge_ce(f, text, y, offset=torch.full((2,), -3.0)), plain)
    rare = y == 1
    adjusted = F.cross_entropy(similarity(f, text) / TAU + offset, y, reduction="none")
    raw = F.cross_entropy(similarity(f, text) / TAU, y, reduction="none")
    assert (adjusted[rare] >= raw[rare]).all() and (adjusted[~rare] <= raw[~rare]).all()
    cfg = LossConfig(("ce",), logit_offset=offset)
    torch.testing.assert_close(total_loss(cfg, f, text, y, None)[0], adjusted.mean())
