"""A person's reference: their measured neutral face, and how it changes the scores."""
import pickle
import shutil
from dataclasses import replace

import numpy as np
import pytest

import kefer
from kefer.analysis import StreamAnalyzer
from kefer.backend import update_file_meta
from kefer.checkpoint import read_meta
from kefer.lab.reference import GRID, choose, subject_of
from kefer.reference import Reference, ReferenceRule
from kefer.scoring import Prompts, combine, relative_evidence, score, temper
from kefer.recognizer import resolve_checkpoint

RULE = {"alpha": 2.0, "beta": 2.0, "cutoff": 0.9}


def with_rule(dest, rule=RULE, source="fast"):
    """A copy of shipped model ``source`` at ``dest`` storing a reference rule."""
    path = dest.with_suffix(".safetensors")
    shutil.copyfile(resolve_checkpoint(source), path)
    update_file_meta(path, {"operating": {**(read_meta(path).get("operating") or {}), "reference": rule}})
    return path


def unit(*values):
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def test_a_reference_is_the_renormalised_mean_with_its_spread_and_it_keeps(tmp_path):
    ref = Reference.from_embeddings(np.array([[2, 0, 0], [0, 1, 0]], np.float32))
    np.testing.assert_allclose(ref.embedding, unit(1, 1, 0), atol=1e-6)
    assert ref.count == 2 and ref.spread == pytest.approx(np.sqrt(0.5), abs=1e-6) and ref.source == "recorded"
    ref.save(tmp_path / "me.npz")
    back = Reference.load(tmp_path / "me.npz")
    np.testing.assert_array_equal(back.embedding, ref.embedding)   # read back byte for byte
    assert (back.spread, back.count, back.source) == (ref.spread, ref.count, ref.source)
    assert pickle.loads(pickle.dumps(ref)).count == 2
    with pytest.raises(ValueError, match="at least one neutral face"):
        Reference.from_embeddings(np.zeros((0, 3), np.float32))


def test_relative_evidence_follows_the_text_direction_from_the_persons_neutral():
    anchors = np.eye(3, dtype=np.float32)                  # neutral, happiness, anger
    ref = Reference.from_embeddings(unit(1, 0.2, 0.2)[None])
    moved = unit(1, 0.2, 0.2) + np.float32(0.3) * unit(-1, 1, 0)   # away from neutral, toward happiness
    rel = relative_evidence(moved[None], ref, anchors, neutral=0)
    assert rel[0, 1] > 0.15 > rel[0, 2] and rel[0, 0] == pytest.approx(float(unit(*moved) @ ref.embedding), abs=1e-6)
    still = relative_evidence(ref.embedding[None], ref, anchors, neutral=0)   # at one's own neutral: no move
    np.testing.assert_allclose(still[0, 1:], 0, atol=1e-6)
    assert still[0, 0] == pytest.approx(1, abs=1e-6)


def test_combine_with_zero_weights_is_plain_scoring_and_weights_move_the_answer():
    probs = np.array([[0.90, 0.06, 0.04]], np.float32)
    relative = np.array([[0.99, 0.8, -0.5]], np.float32)
    np.testing.assert_allclose(combine(probs, relative, 0, ReferenceRule(0, 0, 0.9)), probs, atol=1e-6)
    moved = combine(probs, relative, 0, ReferenceRule(1.0, 0.0, 0.9))
    assert moved.argmax() == 1 and moved.sum() == pytest.approx(1, abs=1e-5)
    kept = combine(probs, np.array([[0.999, 0.1, -0.5]], np.float32), 0, ReferenceRule(1.0, 4.0, 0.9))
    assert kept.argmax() == 0                               # close to one's own neutral: neutral


def test_scoring_with_a_reference_needs_a_stored_rule_and_a_neutral_class():
    prompts = Prompts(("neutral", "happiness"), ("[CLS]",), np.eye(2, dtype=np.float32))
    ref = Reference.from_embeddings(unit(1, 0)[None])
    plain = score(unit(0.6, 0.8)[None], prompts)
    with pytest.raises(ValueError, match="kefer lab reference"):
        score(unit(0.6, 0.8)[None], prompts, ref)
    no_neutral = replace(prompts, classes=("joy", "anger"), reference_rule=ReferenceRule(1, 1, 0.9))
    with pytest.raises(ValueError, match="neutral"):
        score(unit(0.6, 0.8)[None], no_neutral, ref)
    zero = score(unit(0.6, 0.8)[None], replace(prompts, reference_rule=ReferenceRule(0, 0, 0.9)), ref)
    np.testing.assert_allclose(zero[1], plain[1], atol=1e-6)
    np.testing.assert_allclose(zero[0], plain[0], atol=1e-6)   # the cosines stay the absolute ones


def test_the_library_takes_a_persons_reference_on_real_faces(ckplus_root, tmp_path):
    """One CK+ subject's neutral crops as their reference: the API, the stream and the stored rule."""
    from PIL import Image

    rec = kefer.load(with_rule(tmp_path / "m"), backend="torch")
    subject = next(subject_of(p) for p in sorted((ckplus_root / "anger").iterdir())
                   if len([q for q in (ckplus_root / "neutral").iterdir() if subject_of(q) == subject_of(p)]) >= 2)
    neutral = [Image.open(p) for p in sorted((ckplus_root / "neutral").iterdir()) if subject_of(p) == subject]
    angry = [Image.open(p) for p in sorted((ckplus_root / "anger").iterdir()) if subject_of(p) == subject]
    ref = rec.reference(neutral)
    assert ref.count == len(neutral) and 0 < ref.spread <= 1
    np.testing.assert_allclose(np.linalg.norm(ref.embedding), 1, atol=1e-5)
    plain, relative = rec.predict(angry), rec.predict(angry, reference=ref)
    assert plain.shape == relative.shape and not np.allclose(plain, relative, atol=1e-4)
    emb, neutral_index = rec.embed(angry), rec.prompts.neutral_index
    untempered = rec.score(emb, replace(rec.prompts, temperature=1.0))[1]
    expected = combine(untempered, relative_evidence(emb, ref, rec.prompts.anchors, neutral_index), neutral_index,
                       ReferenceRule(**RULE))
    np.testing.assert_allclose(relative, temper(expected, rec.prompts.temperature), atol=1e-5)
    np.testing.assert_allclose(rec.predict(angry), plain, atol=1e-6)   # nothing was changed by scoring with it
    frame = np.full((240, 320, 3), 128, np.uint8)
    stream = StreamAnalyzer(rec, reference=ref)
    assert stream.update(frame) == [] and stream.reference is ref
    from conftest import with_operating

    no_rule = kefer.load(with_operating(tmp_path / "plain", None, None), backend="torch")   # stores no rule
    with pytest.raises(ValueError, match="kefer lab reference"):
        no_rule.predict(angry, reference=ref)


def test_the_rule_keeps_neutral_above_the_floor_where_it_can_and_breaks_ties_toward_small_weights():
    """kefer.lab.reference.choose on a synthetic set: plain scoring gets every neutral face right and
    every expressive one wrong; the relative evidence points right for every face."""
    rng = np.random.default_rng(0)
    n = 40
    labels = np.repeat([0, 1, 2, 3], n)
    probs = np.full((4 * n, 4), 0.05, np.float32)
    probs[:, 0] = 0.85
    relative = rng.uniform(-0.2, 0.2, (4 * n, 4)).astype(np.float32)
    relative[np.arange(4 * n), labels] = 0.9
    relative[:, 0] = np.where(labels == 0, 0.99, 0.7)
    ev = {"classes": ["neutral", "happiness", "anger", "fear"], "probs": probs, "relative": relative,
          "labels": labels, "neutral": 0}
    rule = choose(ev, np.arange(4 * n))
    assert rule != GRID[0] and rule.alpha > 0
    predictions = combine(probs, relative, 0, rule).argmax(1)
    assert (predictions == labels).mean() == 1.0


def test_a_tracks_neutral_face_is_estimated_from_its_own_neutral_frames_after_a_warm_up():
    from kefer.analysis import NeutralEstimates

    estimates = NeutralEstimates(warmup=3, keep=4)
    neutral_face, smile = unit(1, 0, 0), unit(0, 1, 0)
    for step in range(2):
        out = estimates.update([7], neutral_face[None], np.array([True]))
        assert out == [None]                                   # still warming up
    out = estimates.update([7, 8], np.stack([smile, neutral_face]), np.array([False, True]))
    assert out == [None, None]                               # a smiling frame does not count; 8 is new
    (ready,) = estimates.update([7], neutral_face[None], np.array([True]))
    assert ready.source == "estimated" and ready.count == 3
    np.testing.assert_allclose(ready.embedding, neutral_face, atol=1e-6)
    assert 8 not in estimates.frames                          # an absent track is forgotten


def test_analyze_takes_a_reference_photo_and_says_so_per_row(ckplus_root, tmp_path):
    import csv

    from PIL import Image

    from kefer.cli import main as cli

    model = with_rule(tmp_path / "m")
    subject = subject_of(sorted((ckplus_root / "happiness").iterdir())[0])
    neutral = next(p for p in sorted((ckplus_root / "neutral").iterdir()) if subject_of(p) == subject)
    happy = next(p for p in sorted((ckplus_root / "happiness").iterdir()) if subject_of(p) == subject)
    framed = []
    for path in (neutral, happy):                             # a face the detector finds: upscaled, in a frame
        face = Image.open(path).convert("RGB").resize((200, 200))
        frame = Image.new("RGB", (400, 400), (128, 128, 128))
        frame.paste(face, (100, 100))
        framed.append(tmp_path / f"{path.parent.name}.png")
        frame.save(framed[-1])
    out = tmp_path / "faces.csv"
    assert cli(["analyze", str(framed[1]), "--model", str(model), "--backend", "torch", "--reference", str(framed[0]),
                "--csv", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows and all(r["reference"] == "recorded" for r in rows)
    assert cli(["analyze", str(framed[1]), "--model", str(model), "--backend", "torch", "--csv", str(out),
                "--quiet"]) == 0
    assert all(r["reference"] == "none" for r in csv.DictReader(out.open()))
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(blank)
    assert cli(["analyze", str(framed[1]), "--model", str(model), "--reference", str(blank), "--quiet"]) == 2


def test_a_stream_scores_each_track_against_its_estimate_once_warm(ckplus_root, tmp_path):
    """StreamAnalyzer(estimate=True): plain scores during the warm-up, then each face against its
    track's own neutral estimate; a recorded reference wins over the estimate."""
    from PIL import Image

    rec = kefer.load(with_rule(tmp_path / "m"), backend="torch")
    crops = [Image.open(p).convert("RGB").resize((200, 200)) for p in sorted((ckplus_root / "neutral").iterdir())[:20]]
    crop = next(c for c in crops if rec.classes[rec.predict([np.asarray(c)])[0].argmax()] == "neutral")
    frame = np.full((480, 640, 3), 128, np.uint8)
    frame[140:340, 220:420] = np.asarray(crop)
    stream = StreamAnalyzer(rec, every=1, estimate=True)
    seen = [stream.update(frame) for _ in range(14)]
    kinds = [faces[0].reference for faces in seen if faces]
    assert kinds[0] == "none" and kinds[-1] == "estimated" and len(kinds) >= 12
    first = kinds.index("estimated")
    assert all(k == "estimated" for k in kinds[first:]) and first >= stream.estimates.warmup - 1
    stream.reference = Reference.from_embeddings(seen[-1][0].embedding[None])
    assert stream.update(frame)[0].reference == "recorded"


def test_videos_built_from_ckplus_show_each_crop_in_order_and_run_through_the_path(ckplus_root, tmp_path):
    """kefer.lab.reference_video: the two orders, the video written, one run, the per-crop vote."""
    from kefer.lab import reference_video as rv

    subjects, classes = rv.subject_crops(ckplus_root)
    neutral = classes.index("neutral")
    crops = next(c for c in subjects.values() if len({label for _, _, label in c}) >= 3)
    session = rv.in_order(crops, "session", neutral)
    assert [c[0] for c in session] == sorted(c[0] for c in session)   # sequence by sequence, neutral first
    assert all(session[i][2] == neutral for i in range(len(session)) if i == 0 or session[i][0] != session[i - 1][0])
    harder = rv.in_order(crops, "expressive-first", neutral)
    first_neutral = [c[2] for c in harder].index(neutral)
    assert sorted(harder) == sorted(crops) and all(c[2] == neutral for c in harder[first_neutral:])
    shown = session[:2]
    rv.write_video(shown, tmp_path / "v.mp4")
    rec = kefer.load(with_rule(tmp_path / "m"), backend="torch")
    idx = np.array([rec.classes.index(c) for c in classes])
    run = rv.run_video(rec, tmp_path / "v.mp4", rec.prompts, idx)
    assert len(run["found"]) == rv.HOLD * len(shown) and run["found"].all() and run["disagree"] == 0
    assert set(run["estimated"]) <= set(range(len(classes)))
    votes = rv.per_crop(np.array([1, 1, 2, -1, 3, 2, 3, 2]), np.array([0, 0, 0, 0, 1, 1, 1, 1]), len(classes))
    np.testing.assert_array_equal(votes, [1, 2])                     # a tie goes to the lower class
    assert rv.per_crop(np.array([-1, -1]), np.array([0, 0]), 3).tolist() == [-1]


def test_a_tracks_running_estimate_equals_the_mean_of_its_last_kept_neutral_frames():
    from kefer.analysis import NeutralEstimates

    rng = np.random.default_rng(0)
    estimates, kept = NeutralEstimates(warmup=3, keep=5), []
    for _ in range(40):
        face, is_neutral = unit(*(rng.normal(size=16) + 3)), rng.random() < 0.7
        kept += [face] if is_neutral else []
        (out,) = estimates.update([1], face[None], np.array([is_neutral]))
        if len(kept) < 3:
            assert out is None
            continue
        expected = Reference.from_embeddings(np.stack(kept[-5:]))
        np.testing.assert_allclose(out.embedding, expected.embedding, atol=1e-6)
        assert out.spread == pytest.approx(expected.spread, abs=1e-6) and out.count == expected.count
