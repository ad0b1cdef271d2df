"""kefer.scoring.anchor_report on hand-made anchors: what it says about edited prompts."""
import numpy as np
import pytest

from kefer.scoring import CLOSE, MOVED, Prompts, anchor_report, l2_normalise

TRAINED = ("neutral", "happiness", "surprise")


def prompts(classes, anchors, template="A photo of a [CLS] face.") -> Prompts:
    return Prompts(tuple(classes), (template,), l2_normalise(np.array(anchors, np.float32)), trained=TRAINED)


def test_unchanged_prompts_sit_on_their_trained_anchors_and_warn_of_nothing():
    trained = prompts(TRAINED, np.eye(3))
    report = anchor_report(trained, trained)
    assert [r.own for r in report.rows] == pytest.approx([1.0, 1.0, 1.0], abs=1e-6) and all(r.trained for r in report.rows)
    assert all(r.nearest != r.name and r.nearest_cos == pytest.approx(0.0, abs=1e-6) for r in report.rows)
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
    # an adapted wording: judged by its raw anchors, reported with the ones it is scored with
    report = anchor_report(slightly, trained, raw=moved)
    assert len(report.warnings) == 1 and "as the new wording stands" in report.warnings[0]
    assert [r.own for r in report.rows] == [r.own for r in anchor_report(slightly, trained).rows]   # one path, twice: exact
    assert anchor_report(moved, trained, raw=slightly).warnings == ()
    many = Prompts(TRAINED, ("A photo of a [CLS] face.", "[CLS]."), trained.anchors, trained=TRAINED)
    assert "trained on 2 wordings such as “A photo of a [CLS] face.”" in anchor_report(moved, many).warnings[0]


def test_scores_add_the_prompts_offsets_and_a_constant_offset_changes_nothing():
    """softmax(logits - a log(K prior)) is softmax(logits - a log prior): the K cancels, so
    RESULTS 8c's figures (made with -a log prior) hold for the stored strengths."""
    from dataclasses import replace

    from kefer.scoring import score

    base = prompts(TRAINED, np.eye(3), "[CLS]")
    f = np.array([[1.0, 0.2, 0.1], [0.1, 0.3, 0.299]], np.float32)
    prior = np.array([0.7, 0.2, 0.1])
    logits = (f / np.linalg.norm(f, axis=1, keepdims=True)) / 0.01
    expected = np.exp(logits - 0.5 * np.log(prior))
    expected /= expected.sum(1, keepdims=True)
    for offsets in (-0.5 * np.log(3 * prior), -0.5 * np.log(prior)):
        cos, probs = score(f, replace(base, offsets=offsets.astype(np.float32)))
        np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_allclose(cos, score(f, base)[0])
    assert score(f, base)[1][1].argmax() == 1 and probs[1].argmax() == 2   # the rarer class wins


def test_per_class_auc_ranks_a_class_without_winning_the_argmax():
    """Class 1's score never wins, yet ranks its own faces first: AUC 1 with recall 0."""
    from kefer.train.metrics import classification_metrics, per_class_auc

    y = np.array([0, 0, 1, 1, 2])
    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.9, 0.6, 0.0], [0.7, 0.5, 0.1], [0.1, 0.0, 0.9]])
    auc = per_class_auc(y, scores, ["a", "b", "c"])
    assert auc["b"] == 1.0 and auc["c"] == 1.0
    assert classification_metrics(y, scores.argmax(1), ["a", "b", "c"])["per_class_accuracy"]["b"] == 0.0
    assert per_class_auc(np.zeros(3, int), np.ones((3, 2)), ["a", "b"]) == {"a": None, "b": None}
