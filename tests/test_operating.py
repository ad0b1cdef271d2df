"""Operating points (kefer.operating): balance offsets, the selection rules, storing them in
.safetensors and .onnx files, evaluate's --logit-adjust through the same mechanism, and the
"uncertain" answer in FaceResult and ``kefer analyze``."""
from __future__ import annotations

import csv
import json

from dataclasses import replace

import numpy as np
import onnx
import pytest
from PIL import Image
from safetensors import safe_open

import kefer
from conftest import PRIOR, with_operating
from kefer.analysis import FaceResult
from kefer.backend import read_onnx_meta
from kefer.checkpoint import read_meta
from kefer.cli import main as cli
from kefer.lab.operating import STRENGTHS, THRESHOLDS, choose_margin, choose_strength, main as operating_main, precision_coverage, write
from kefer.operating import UNCERTAIN, OperatingPoint
from kefer.scoring import Prompts


def test_offsets_are_minus_a_log_k_prior_and_zero_for_zero_shot_classes():
    point = OperatingPoint({"a": 0.5, "b": 0.25, "c": 0.25})
    offsets = point.offsets(["b", "confused", "a"], 0.5)
    np.testing.assert_allclose(offsets, [-0.5 * np.log(3 * 0.25), 0.0, -0.5 * np.log(3 * 0.5)], rtol=1e-6)
    assert point.offsets(["a"], 0.0) is None
    with pytest.raises(ValueError, match="no training class frequencies"):
        OperatingPoint().offsets(["a"], 0.5)


def prompts(classes=("a", "b", "c")) -> Prompts:
    return Prompts(tuple(classes), ("[CLS]",), np.eye(len(classes), dtype=np.float32), trained=tuple(classes))


def test_apply_uses_the_stored_point_only_where_asked_and_stored():
    point = OperatingPoint({"a": 0.5, "b": 0.25, "c": 0.25}, strength=0.4, margin=0.3)
    on = point.apply(prompts())
    assert on.strength == 0.4 and on.abstain_margin == 0.3 and on.offsets is not None
    off = point.apply(prompts(), balanced=False, abstain=False)
    assert off.strength == 0 and off.offsets is None and off.abstain_margin is None
    nothing = OperatingPoint({"a": 0.5}).apply(prompts())
    assert nothing.offsets is None and nothing.abstain_margin is None


def test_the_strength_is_the_best_mean_per_class_within_half_a_point_of_a_0():
    accuracy = [0.870, 0.871, 0.866, 0.864, 0.850]
    mean = [0.69, 0.70, 0.74, 0.80, 0.85]   # the last two cost more than 0.5 points
    assert choose_strength(accuracy, mean) == 2
    assert choose_strength([0.87, 0.87, 0.87], [0.7, 0.75, 0.75]) == 1   # ties: the smaller strength
    assert choose_strength([0.87, 0.80], [0.7, 0.9]) == 0                # nothing allowed but a = 0


def test_the_margin_is_the_smallest_threshold_whose_answered_faces_reach_the_precision():
    margin = np.array([0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95])
    correct = np.array([0, 0, 1, 0, 1, 1, 1, 1, 1, 1], bool)
    thresholds = np.round(np.arange(0, 1.0001, 0.1), 2)
    precision, coverage = precision_coverage(margin, correct, thresholds)
    assert precision[0] == pytest.approx(0.7) and coverage[0] == 1.0
    assert precision[4] == pytest.approx(1.0) and coverage[4] == pytest.approx(0.6)
    assert np.isnan(precision[-1]) and coverage[-1] == 0
    assert choose_margin(precision, 0.95) == 4            # t = 0.4: the 6 faces from 0.45 up are all right
    assert choose_margin(precision, 0.86) == 2            # t = 0.2: 7 of 8 (t = 0.3 has 6 of 7: less)
    assert choose_margin(precision, 0.88) == 4
    assert choose_margin(np.full(3, 0.5), 0.95) is None


def test_uncertain_faces_keep_their_top_class():
    face = FaceResult(np.zeros(4), np.zeros((5, 2)), 1.0, np.zeros((8, 8, 3), np.uint8), np.zeros(3),
                      np.zeros(3), np.array([0.5, 0.42, 0.08]), ("neutral", "happiness", "fear"), abstain_margin=0.1)
    assert face.uncertain and face.label == UNCERTAIN and face.top_class == "neutral"
    assert face.margin == pytest.approx(0.08) and face.label_text == "uncertain (neutral 0.50)"
    assert face.as_dict()["label"] == UNCERTAIN and face.as_dict()["top_class"] == "neutral"
    sure = FaceResult(**{**face.__dict__, "abstain_margin": 0.05})
    assert not sure.uncertain and sure.label == "neutral" and sure.label_text == "neutral 0.50"
    assert FaceResult(**{**face.__dict__, "abstain_margin": None}).label == "neutral"


@pytest.fixture(scope="module")
def faces(ferplus_root):
    files = sorted((ferplus_root / "FER2013Valid").glob("*.png"))[:48]
    return [Image.open(f).convert("RGB") for f in files]


def test_balanced_false_gives_the_raw_probabilities_and_balanced_true_the_offsets(faces, tmp_path):
    path = with_operating(tmp_path / "op", strength=0.5, margin=0.3)
    raw = kefer.load(path, backend="torch", balanced=False, abstain=False)
    cos, probs = raw.score(raw.embed(faces))
    z = cos / 0.01
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), atol=1e-5)   # softmax(cos / tau)
    plain = kefer.load(with_operating(tmp_path / "none", None, None), backend="torch")   # no point stored
    np.testing.assert_allclose(probs, plain.predict(faces), atol=1e-5)
    assert raw.prompts.abstain_margin is None and "raw scores" in raw.summary
    rec = kefer.load(path, backend="torch")
    offsets = np.array([-0.5 * np.log(8 * PRIOR[c]) for c in rec.classes])
    balanced = np.exp(z + offsets - (z + offsets).max(1, keepdims=True))
    np.testing.assert_allclose(rec.predict(faces), balanced / balanced.sum(1, keepdims=True), atol=1e-5)
    assert rec.prompts.abstain_margin == 0.3 and "balanced (a = 0.5)" in rec.summary and "margin 0.30" in rec.summary


def test_new_prompts_keep_the_operating_point_and_zero_shot_classes_get_no_offset(tmp_path):
    rec = kefer.load(with_operating(tmp_path / "op", strength=0.5, margin=0.3), backend="torch")
    mine = rec.encode_prompts(classes=["confused", "happiness", "neutral"])
    np.testing.assert_allclose(mine.offsets, [0.0, -0.5 * np.log(8 * 0.30), -0.5 * np.log(8 * 0.36)], rtol=1e-6)
    assert mine.abstain_margin == 0.3 and mine.zero_shot == ("confused",)
    other = rec.with_prompts(rec.encode_prompts(classes=["confused", "happiness"]))
    assert other.prompts.offsets[0] == 0 and other.prompts.strength == 0.5
    assert rec.prompts is rec.trained_prompts and rec.classes != other.classes


def test_evaluate_logit_adjust_equals_the_old_probability_adjustment_on_real_faces(ferplus_root):
    """The old kefer.scoring.logit_adjust (probs * prior**-a, renormalised: -a log(prior), without
    K) against --logit-adjust through the offsets: the same predictions, face for face."""
    from kefer.train.evaluate import evaluate, split_features, training_prior

    rec = kefer.load("fast", backend="torch", balanced=False, abstain=False)
    rec = rec.with_prompts(replace(rec.prompts, temperature=1.0))   # the offsets alone, untempered
    _, feats, labels, idx = split_features(rec, "ferplus", ferplus_root, "val")
    prior = training_prior(rec)
    raw = rec.score(feats.numpy())[1]
    for a in (0.0, 0.5, 1.0):
        old = raw * np.array([prior[c] for c in rec.classes]) ** -a
        old /= old.sum(1, keepdims=True)
        new = rec.score(feats.numpy(), OperatingPoint(prior).balance(rec.prompts, a))[1]
        np.testing.assert_allclose(new, old, atol=1e-5)
    out = evaluate(rec, "ferplus", ferplus_root, split="val", logit_adjust=0.5)
    old_pred = (raw * np.array([prior[c] for c in rec.classes]) ** -0.5)[:, idx.numpy()].argmax(1)
    cm = np.zeros((8, 8), int)
    np.add.at(cm, (labels.numpy(), old_pred), 1)
    assert out["logit_adjust"] == 0.5 and out["confusion_matrix"] == cm.tolist()
    assert out["val_accuracy"] == pytest.approx((old_pred == labels.numpy()).mean())
    assert "val_coverage" not in out


def test_evaluate_reports_coverage_where_the_model_abstains(ferplus_root, tmp_path):
    from kefer.train.evaluate import evaluate

    rec = kefer.load(with_operating(tmp_path / "op", strength=None, margin=0.5), backend="torch")
    out = evaluate(rec, "ferplus", ferplus_root, split="val")
    plain = kefer.load(with_operating(tmp_path / "none", None, None), backend="torch")   # no point stored
    raw = evaluate(plain, "ferplus", ferplus_root, split="val")
    assert out["val_accuracy"] == raw["val_accuracy"]            # still the argmax over every face
    # (exact: no offsets either way, so the same probabilities, argmax and count over the same faces)
    assert 0 < out["val_coverage"] < 1 and out["val_answered_accuracy"] > out["val_accuracy"]
    assert out["abstain_margin"] == 0.5


def test_the_operating_command_chooses_by_the_rule_and_writes_a_safetensors_file(ferplus_root, tmp_path,
                                                                                 monkeypatch, capsys):
    import kefer.train.evaluate as train_evaluate

    from kefer.backend import update_file_meta

    path = tmp_path / "fast.safetensors"
    path.write_bytes(kefer.recognizer.resolve_checkpoint("fast").read_bytes())
    update_file_meta(path, {"operating": {}})   # no stored point or prior: the prior is counted on train
    splits = []
    build = train_evaluate.build_dataset
    monkeypatch.setattr(train_evaluate, "build_dataset", lambda name, root, split, *a, **k: (
        splits.append(split), build(name, root, split, *a, **k))[1])
    before = read_meta(path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    code = operating_main([str(path), "--write", "--output", str(tmp_path / "op.json"), "--plot",
                           str(tmp_path / "op.png"), "--precision", "0.9"])
    assert code == 0 and set(splits) == {"train", "val"}                 # the test split is never read
    result = json.loads((tmp_path / "op.json").read_text())
    sweep, op = result["sweep"], result["operating"]
    assert sweep["strength"] == STRENGTHS.tolist() and sweep["threshold"] == THRESHOLDS.tolist()
    assert op["balance"]["strength"] == STRENGTHS[choose_strength(sweep["accuracy"], sweep["mean_accuracy"])]
    t = op["abstain"]["margin"]
    assert t == THRESHOLDS[choose_margin(sweep["precision"], 0.9)] and op["abstain"]["val"]["answered_accuracy"] >= 0.9
    assert "<- chosen" in capsys.readouterr().out and Image.open(tmp_path / "op.png").size[0] > 500
    after = read_meta(path)
    assert after["operating"] == op
    assert {k: v for k, v in after.items() if k != "operating"} == {k: v for k, v in before.items() if k != "operating"}
    with safe_open(str(path), framework="pt") as f:
        for k, v in tensors.items():
            stored = f.get_tensor(k)
            assert stored.dtype == v.dtype and stored.numpy().tobytes() == v.numpy().tobytes(), k
    rec = kefer.load(path, backend="torch")
    assert rec.prompts.strength == op["balance"]["strength"] and rec.prompts.abstain_margin == t


def test_write_round_trips_an_onnx_file(tmp_path):
    path = with_operating(tmp_path / "int8", strength=0.35, margin=0.76, source="accurate-int8")
    original = onnx.load(str(kefer.recognizer.resolve_checkpoint("accurate-int8")))
    written = onnx.load(str(path))
    assert written.graph.SerializeToString() == original.graph.SerializeToString()
    meta = read_onnx_meta(path)[0]
    assert meta["operating"]["balance"]["strength"] == 0.35 and meta["operating"]["class_prior"] == PRIOR
    write(path, {"abstain": {"margin": 0.5, "precision": 0.9, "rule": "test", "val": {}}})   # merged, not replaced
    rec = kefer.load(path)
    assert rec.operating == OperatingPoint(PRIOR, 0.35, 0.5) and "balanced (a = 0.35)" in rec.summary


def test_the_cli_writes_label_and_top_class_and_honours_no_abstain(ckplus_root, tmp_path):
    from test_analysis import ck_face

    model = with_operating(tmp_path / "sure", strength=0.5, margin=1.0)   # margin 1: every face is uncertain
    photo = tmp_path / "face.png"
    Image.fromarray(ck_face(ckplus_root, "happiness")).save(photo)
    rows = {}
    for flags in ([], ["--no-abstain"], ["--no-abstain", "--no-balance"]):
        out = tmp_path / f"faces{len(flags)}.csv"
        assert cli(["analyze", str(photo), "--model", str(model), "--backend", "torch", "--csv", str(out),
                    "--quiet", *flags]) == 0
        [rows[len(flags)]] = list(csv.DictReader(open(out)))
    assert {"label", "top_class"} <= set(rows[0])
    assert rows[0]["label"] == UNCERTAIN and rows[0]["top_class"] in kefer.load("fast", backend="torch").classes
    assert rows[1]["label"] == rows[1]["top_class"] == rows[0]["top_class"]
    assert rows[1]["p_happiness"] == rows[0]["p_happiness"] != rows[2]["p_happiness"]   # --no-balance: raw


def test_the_class_prior_is_the_one_training_draws_from():
    from kefer.operating import class_prior

    targets, classes = [0, 0, 0, 1], ["neutral", "anger", "fear"]   # fear has no training face
    assert class_prior(targets, classes) == {"neutral": 0.75, "anger": 0.25}
    assert class_prior(targets, classes, balance="oversample") == {"neutral": 0.5, "anger": 0.5}

