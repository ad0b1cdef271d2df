"""kefer.scoring.anchor_report on hand-made anchors: what it says about edited prompts."""
import numpy as np

from kefer.scoring import CLOSE, MOVED, Prompts, anchor_report, l2_normalise

TRAINED = ("neutral", "happiness", "surprise")


def prompts(classes, anchors, template="A photo of a [CLS] face.") -> Prompts:
    return Prompts(tuple(classes), (template,), l2_normalise(np.array(anchors, np.float32)), trained=TRAINED)


def test_unchanged_prompts_sit_on_their_trained_anchors_and_warn_of_nothing():
    trained = prompts(TRAINED, np.eye(3))
    report = anchor_report(trained, trained)
    assert [r.own for r in report.rows] == [1.0, 1.0, 1.0] and all(r.trained for r in report.rows)
    assert all(r.nearest != r.name and r.nearest_cos == 0.0 for r in report.rows)
    assert report.warnings == () and trained.zero_shot == ()


def test_a_new_class_is_zero_shot_with_its_nearest_trained_class_and_flagged_when_close():
    trained = prompts(TRAINED, np.eye(3))
    edited = prompts([*TRAINED, "joy", "confusion"], [*np.eye(3), [0.1, 1, 0], [0.5, 0.2, 0.6]])
    rows = {r.name: r for r in anchor_report(edited, trained).rows}
    assert edited.zero_shot == ("joy", "confusion")
    assert not rows["joy"].trained and rows["joy"].own is None and rows["joy"].nearest == "happiness"
    assert rows["joy"].nearest_cos >= CLOSE and "joy ≈ happiness" in rows["joy"].warning
    assert rows["confusion"].nearest == "surprise" and rows["confusion"].nearest_cos < CLOSE
    assert rows["confusion"].warning == ""


def test_a_template_that_moves_the_trained_anchors_far_is_a_warning():
    trained = prompts(TRAINED, np.eye(3), "A photo of a [CLS] face.")
    moved = prompts(TRAINED, np.eye(3) + 0.6, "[CLS]")
    report = anchor_report(moved, trained)
    assert all(r.own < MOVED for r in report.rows)
    assert len(report.warnings) == 1 and "trained on “A photo of a [CLS] face.”" in report.warnings[0]
    slightly = prompts(TRAINED, np.eye(3) + 0.1, "[CLS]")
    assert anchor_report(slightly, trained).warnings == ()


def test_logit_adjustment_is_softmax_of_logits_minus_strength_times_log_prior():
    from kefer.scoring import logit_adjust

    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.5, 0.2]])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    prior = np.array([0.7, 0.2, 0.1])
    expected = np.exp(logits - 0.5 * np.log(prior))
    np.testing.assert_allclose(logit_adjust(probs, prior, 0.5), expected / expected.sum(1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(logit_adjust(probs, prior, 0.0), probs, atol=1e-6)
    assert probs[0].argmax() == 0 and logit_adjust(probs, prior, 1.0)[0].argmax() == 1   # a rarer class wins
