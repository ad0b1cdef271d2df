"""The app's logic without a browser: per-tab frame processing, photos, prompts, calibration, map,
the page's wiring and its HTTP API."""
import dataclasses
import html
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image

import kefer
import kefer.app.session
from kefer.app import NO_MODEL, App, Session, build_demo
from kefer.app import layout
from kefer.app.handlers import Handlers
from kefer.app.map import EMPTY, TITLE, background, embedding_map
from kefer.app.render import template_label, template_text
from kefer.embedding_map import MAPS, ReferenceMap, find_map, fingerprint
from kefer.app.render import TILE
from kefer.calibration import NeutralCalibration
from kefer.reference import Reference
from kefer.lab.wordings import encode_prompts as lab_encode
from kefer.scoring import anchor_report, l2_normalise
from test_faces import GREY, ferplus_faces, paste, real_faces

ROOT = Path(__file__).resolve().parents[1]


def write_untrained_checkpoint(path: Path) -> None:
    """A checkpoint exactly as train.py writes it (preset 'cpu': ResNet-18 at 64 px, MiniLM text),
    with the encoder left at its random initialisation: the app's tests need a model, not a good one."""
    from kefer.checkpoint import save_model
    from kefer.train.config import preset
    from kefer.train.fit import checkpoint_meta
    from kefer.models.network import KEFERModel
    from kefer.models.factory import create_encoder
    from kefer.text import encode_classes, create_text_encoder

    cfg = preset("cpu")
    classes = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    text_encoder = create_text_encoder(cfg.text_encoder)
    text, prompts = encode_classes(text_encoder, classes, cfg.templates)
    torch.manual_seed(0)
    model = KEFERModel(create_encoder(cfg.encoder, cfg.img_size), len(classes), text)
    save_model(path, model.state_dict(), checkpoint_meta(cfg, model, classes, text_encoder.id, prompts))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """The fast model in assets/ if there is one, else an untrained checkpoint in a tmp dir."""
    fast = ROOT / "assets" / "fast.safetensors"
    if fast.is_file():
        return fast
    path = tmp_path_factory.getbasetemp() / "app_checkpoint.safetensors"
    if not path.is_file():
        write_untrained_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def app(checkpoint):
    return App(kefer.load(checkpoint))


def app_with_reference_rule(checkpoint, folder, rule) -> App:
    """The app on a copy of the checkpoint that stores ``rule`` as its reference rule (None: none)."""
    from kefer.backend import update_file_meta
    from kefer.checkpoint import read_meta

    path = folder / "model.safetensors"
    shutil.copyfile(checkpoint, path)
    operating = {k: v for k, v in (read_meta(path).get("operating") or {}).items() if k != "reference"}
    update_file_meta(path, {"operating": {**operating, **({"reference": rule} if rule else {})}})
    return App(kefer.load(path))


@pytest.fixture(scope="module")
def app_with_rule(checkpoint, tmp_path_factory):
    return app_with_reference_rule(checkpoint, tmp_path_factory.mktemp("rule"),
                                   {"alpha": 8.0, "beta": 16.0, "cutoff": 0.85})


@pytest.fixture(scope="module")
def frames(ckplus_root, ferplus_root):
    """Real faces in 640x480 frames: one face, two faces, none."""
    one, other = real_faces(ckplus_root, 1)[0], ferplus_faces(ferplus_root, 1)[0]
    return {
        "one": paste([one], [(200, 120, 220)]),
        "two": paste([one, other], [(20, 100, 160), (330, 60, 260)]),
        "none": np.full((480, 640, 3), GREY, np.uint8),
    }



# ---- the webcam ---------------------------------------------------------------------------------
def test_frame_with_a_face_gets_a_label_and_bars_for_every_class(app, frames):
    session = Session(app)
    view = session.process_frame(frames["one"])
    assert view.image.shape == (480, 640, 3) and (view.image != frames["one"]).any()
    assert "Face 1 of 1 (largest)" in view.bars
    for name in app.rec.classes:
        assert f"data-class='{name}'" in view.bars
    assert len(session.history) == 1


def test_the_box_label_and_the_bars_come_from_the_same_face_result(app_with_rule, frames):
    """Issue 17.9: the label drawn on the box is the bars' headline, plain and with a reference alike."""
    session = Session(app_with_rule)
    for recorded in (False, True):
        view = session.process_frame(frames["two"])
        face = session.frame_faces[0]
        headline = re.search(r"<span class='kefer-label'>([^<]*)</span>", view.bars).group(1)
        assert headline == view.labels[0] == face.label_text   # "happiness 0.87", or "uncertain (anger 0.49)"
        assert face.reference == ("recorded" if recorded else "none")
        session.neutral.reference = Reference.from_embeddings(face.embedding[None])   # a recording of this face


def test_frames_with_no_face_or_odd_formats_give_messages(app, frames):
    session = Session(app)
    view = session.process_frame(frames["none"])
    assert "No face in view" in view.bars
    np.testing.assert_array_equal(view.image, frames["none"])
    rgba = np.dstack([frames["one"], np.full((480, 640), 255, np.uint8)])
    assert "Face 1 of 1" in session.process_frame(rgba).bars
    assert "Face 1 of 1" in session.process_frame(frames["one"][:, :, 0]).bars


def test_clicking_a_face_selects_it_until_it_leaves(app, frames):
    session = Session(app)
    assert "Face 1 of 2 (largest)" in session.process_frame(frames["two"]).bars
    small = next(f for f in session.frame_faces if f.box[0] < 300)
    session.select_at((small.box[0] + small.box[2]) / 2, (small.box[1] + small.box[3]) / 2)
    assert "Face 2 of 2</b>" in session.process_frame(frames["two"]).bars
    session.select_at(5, 5)  # outside every face: back to the largest
    assert "Face 1 of 2 (largest)" in session.process_frame(frames["two"]).bars


def test_smoothing_averages_representations_over_frames(app, frames, ckplus_root):
    other = paste(real_faces(ckplus_root, 2, "surprise")[1:], [(200, 120, 220)])
    raw, smooth = Session(app), Session(app)
    crops = []
    for frame in (frames["one"], other):
        raw.process_frame(frame, smoothing=False)
        crops.append(raw.frame_faces[0].crop)
        smooth.process_frame(frame, smoothing=True)
    expected = l2_normalise(app.rec.embed(crops, normalise=False).mean(axis=0))
    np.testing.assert_allclose(smooth.history[1], expected, atol=1e-5)


def test_two_sessions_streaming_at_once_keep_their_own_prompts(app, frames):
    sessions = [Session(app), Session(app)]
    sessions[1].set_prompts("This person is [CLS].", "calm\nconfused")
    results = [[], []]

    def stream(i):
        for _ in range(4):
            results[i].append(sessions[i].process_frame(frames["one"]).bars)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("data-class='contempt'" in bars and "confused" not in bars for bars in results[0])
    assert all("data-class='confused'" in bars and "contempt" not in bars for bars in results[1])


# ---- prompts ------------------------------------------------------------------------------------
def test_prompt_edits_are_validated_zero_shot_and_per_session(app, frames):
    session, other = Session(app), Session(app)
    before = session.prompts
    assert session.set_prompts("A photo of a face.", "happy").startswith("Error")
    assert session.set_prompts(app.rec.templates[0], " \n , ").startswith("Error")
    assert session.prompts is before

    message = session.set_prompts("A person is feeling [CLS].", "neutral\nhappiness\nconfused")
    assert message.startswith("Applied: 3 classes")
    assert session.prompts.anchors.shape == (3, before.anchors.shape[1])
    bars = session.process_frame(frames["one"]).bars
    assert "data-class='confused'" in bars and "data-class='surprise'" not in bars
    assert "data-class='confused'" not in other.process_frame(frames["one"]).bars
    assert tuple(app.rec.classes) == before.classes  # the shared recogniser keeps its own prompts

    assert "1 wording(s) the model was not trained on" in session.set_prompts("A face showing [CLS].", "neutral")
    assert "not trained on" not in session.set_prompts(app.rec.templates[0], "neutral")
    session.reset_prompts()
    assert session.prompts is app.default_prompts


def test_the_template_box_shows_every_template_in_use_and_reset_restores_it(app):
    """Issue 27.6: the box says what the model scores with, all its trained wordings, and Reset restores it."""
    prompts = app.default_prompts
    demo = build_demo(app.rec)
    box = components(demo)["template"]
    assert box.value == "\n".join(prompts.templates) == "\n".join(app.rec.templates)
    assert box.label == template_label(prompts)
    many = dataclasses.replace(prompts, templates=("This person is [CLS].", "A photo of a [CLS] face.", "[CLS]."))
    assert template_label(many).startswith("Template: 3 trained wordings, averaged")
    assert template_text(many).splitlines() == list(many.templates)
    handlers, session = Handlers(app), Session(app)
    assert handlers.reprompt("A face showing [CLS].", "neutral\nhappiness", session)[0].startswith("Applied")
    assert handlers.reset(session)[0] == box.value
    assert session.set_prompts(box.value, "\n".join(prompts.classes)).startswith("Applied")   # as shown, applied
    np.testing.assert_allclose(session.prompts.anchors, prompts.anchors, atol=1e-5)


def test_the_shipped_accurate_model_shows_its_29_trained_wordings():
    if not (ROOT / "assets" / "accurate-int8.onnx").is_file():
        pytest.skip("needs assets/accurate-int8.onnx")
    prompts = kefer.load("accurate-int8").trained_prompts
    assert len(prompts.templates) == 29 and template_text(prompts).count("\n") == 28
    assert template_label(prompts).startswith("Template: 29 trained wordings, averaged")


def test_several_template_lines_are_averaged(app):
    from kefer.app.layout import ALL_NINE, template_choice
    from kefer.text import PAPER_TEMPLATES

    session = Session(app)
    assert session.set_prompts("A person is feeling [CLS].\nno placeholder", "neutral\nhappiness").startswith(
        "Error: each template must contain [CLS]")
    assert template_choice(PAPER_TEMPLATES[2]) == PAPER_TEMPLATES[2]
    message = session.set_prompts(template_choice(ALL_NINE), "\n".join(app.rec.classes))
    assert "9 templates averaged." in message and session.prompts.templates == tuple(PAPER_TEMPLATES)
    np.testing.assert_allclose(session.prompts.anchors, app.rec.encode_prompts(template=PAPER_TEMPLATES).anchors,
                               atol=1e-6)


def test_reencoding_the_checkpoint_prompts_reproduces_its_anchors(app):
    again = app.encode(app.rec.templates[0], app.rec.classes)
    np.testing.assert_allclose(again.anchors, app.default_prompts.anchors, atol=1e-5)


def test_the_anchor_report_tells_trained_from_zero_shot_classes_with_the_real_text_encoder(app):
    """Issue item 4: how far edited anchors sit from the trained ones."""
    own = app.default_prompts
    same = anchor_report(app.encode(own.template, list(own.classes)), own)
    assert all(r.trained and abs(r.own - 1.0) < 1e-5 and r.nearest not in (None, r.name) for r in same.rows)
    assert same.warnings == ()
    edited = app.encode(own.template, [*own.classes, "confusion", "joy"])
    rows = {r.name: r for r in anchor_report(edited, own).rows}
    assert not rows["confusion"].trained and rows["confusion"].own is None
    assert rows["confusion"].nearest in own.classes and 0 < rows["confusion"].nearest_cos < 1
    assert rows["joy"].nearest == "happiness" and "joy ≈ happiness" in rows["joy"].warning
    raw = app.encode("[CLS]", list(own.classes), raw=True)
    assert any("accuracy may drop" in w for w in anchor_report(raw, own).warnings)
    transferred = lab_encode(app.rec, "[CLS]", list(own.classes), "transfer")   # moved close to the trained
    report = anchor_report(transferred, own)
    assert report.warnings == () and all(r.own > 0.9 for r in report.rows)
    session = Session(app)                                   # the app judges the wording as it stands
    assert "not trained on" in session.set_prompts("[CLS]", "\n".join(own.classes))
    assert any("as the new wording stands" in w for w in session.report.warnings)
    scored = anchor_report(app.encode("[CLS]", list(own.classes)), own)      # and shows the anchors it scores with
    assert [r.own for r in session.report.rows] == pytest.approx([r.own for r in scored.rows], abs=1e-6)


def test_apply_shows_the_anchor_report_and_the_bars_tag_zero_shot_classes(app, frames, tmp_path):
    Image.fromarray(frames["one"]).save(tmp_path / "one.png")
    handlers, session = Handlers(app), Session(app)
    handlers.analyse_photos([tmp_path / "one.png"], session)
    template, classes = app.rec.templates[0], "\n".join([*app.rec.classes, "confusion"])
    message, report, gallery, bars, *_ = handlers.reprompt(template, classes, session)
    assert message.startswith("Applied") and "data-class='confusion' data-trained='0'" in report
    assert "data-class='happiness' data-trained='1'" in report and "zero-shot" in report
    assert zero_shot_tagged(bars) == zero_shot_tagged(session.process_frame(frames["one"]).bars) == ["confusion"]
    _, _, message, report, _, bars, *_ = handlers.reset(session)
    assert report == "" and zero_shot_tagged(bars) == zero_shot_tagged(session.process_frame(frames["one"]).bars) == []


def zero_shot_tagged(bars: str) -> list[str]:
    """The classes whose bars row carries the italic zero-shot tag."""
    return re.findall(r"data-class='([^']+)'[^>]*><td>[^<]*<i class='kefer-zero-shot'", bars)


def test_the_text_encoder_loads_in_the_background_when_the_app_starts(checkpoint, monkeypatch):
    """Issue 17.4: the first Apply does not wait for the text encoder: the app's background thread
    has loaded it, and Apply loads nothing (a load here would fail the test)."""
    import kefer.recognizer

    rec = kefer.load(checkpoint)
    assert rec._shared["text_encoder"] is None
    demo = build_demo(rec)
    loader = demo.kefer_app.text_loader
    assert loader is not None and loader.name == "kefer-text"
    loader.join(timeout=120)
    assert rec._shared["text_encoder"] is not None and demo.kefer_app.text_status == "Text encoder ready."

    def no_load(name):
        raise AssertionError(f"Apply loaded the text encoder {name!r}")

    monkeypatch.setattr(kefer.recognizer, "create_text_encoder", no_load)
    message = Session(demo.kefer_app).set_prompts("A person is feeling [CLS].", "neutral\nconfused")
    assert message.startswith("Applied")


# ---- photos -------------------------------------------------------------------------------------
def test_photos_of_every_kind_are_scored_or_explained(app, frames, tmp_path):
    Image.fromarray(frames["two"]).save(tmp_path / "two.jpg")
    Image.fromarray(np.dstack([frames["one"], np.full((480, 640), 200, np.uint8)])).save(tmp_path / "rgba.png")
    cv2.imwrite(str(tmp_path / "grey16.png"), frames["one"][:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(frames["none"]).save(tmp_path / "empty.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    session = Session(app)
    messages = session.add_photos([tmp_path / n for n in ["two.jpg", "rgba.png", "grey16.png", "empty.png",
                                                           "broken.jpg"]])
    assert len(messages) == 1 and "broken.jpg" in messages[0]
    assert [len(p.faces) for p in session.album.photos] == [2, 1, 1, 0]
    captions = [c for _, c in session.album.gallery()]
    assert len(captions) == 5 and captions[-1] == "empty.png: no face found"
    assert "two.jpg: face 1 of 2" in session.album.bars()
    session.album.selected = 4
    assert "No face found in empty.png" in session.album.bars()
    session.score_whole_images()
    assert session.album.photos[3].whole and session.album.rows()[-1]["whole_image"]
    assert len(session.album.embeddings()) == 5 and len(session.history) == 0   # photos are not webcam history


def test_a_corrupt_upload_names_the_file_never_a_server_path(app, tmp_path):
    """Issue 17.3, through the upload handler as gradio calls it (a file in its temp folder)."""
    folder = tmp_path / "gradio" / "6990a1b2c3"
    folder.mkdir(parents=True)
    (folder / "c_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    message = Handlers(app).analyse_photos([str(folder / "c_corrupt.jpg")], Session(app))[0]
    assert message.startswith("c_corrupt.jpg: not a readable image")
    assert str(tmp_path) not in message and "6990a1b2c3" not in message and "/" not in message


def test_every_face_of_a_photo_is_a_tile_with_its_label_and_its_own_bars(app, frames, tmp_path):
    """Issue 17.5: one tile per face, labelled in its caption; a click on any face shows its bars."""
    Image.fromarray(frames["two"]).save(tmp_path / "two.jpg")
    session = Session(app)
    session.add_photos([tmp_path / "two.jpg"])
    tiles = session.album.gallery()
    faces = session.album.photos[0].faces
    assert len(tiles) == 2
    for i, ((tile, caption), face) in enumerate(zip(tiles, faces)):
        assert tile.shape == (TILE, TILE, 3)
        assert caption == f"two.jpg · face {i + 1}: {face.label_text}"
    bars = []
    for i in range(2):
        session.album.selected = i
        bars.append(session.album.bars())
        assert f"two.jpg: face {i + 1} of 2" in bars[i]
        assert f"{faces[i].probabilities[0]:.3f}" in bars[i]
    assert bars[0] != bars[1]


def test_boxes_of_a_6000x4000_photo_are_in_its_own_pixels_clipped(app, ckplus_root, tmp_path):
    photo = np.full((4000, 6000, 3), GREY, np.uint8)
    photo[1800:2100, 4000:4300] = cv2.resize(real_faces(ckplus_root, 1)[0], (300, 300))
    photo[3700:4000, 5700:6000] = cv2.resize(real_faces(ckplus_root, 1)[0], (300, 300))  # at the corner
    Image.fromarray(photo).save(tmp_path / "huge.jpg", quality=90)
    session = Session(app)
    assert session.add_photos([tmp_path / "huge.jpg"]) == []
    rows = session.album.rows()
    assert len(rows) == 2
    inner = min(rows, key=lambda r: r["x0"])
    assert 3900 < inner["x0"] < 4100 and 4200 < inner["x1"] < 4400 and 1700 < inner["y0"] < 1900
    for r in rows:
        assert 0 <= r["x0"] < r["x1"] <= 5999 and 0 <= r["y0"] < r["y1"] <= 3999
    assert len(session.album.gallery()) == 2


def test_a_whole_image_score_with_a_low_top_probability_is_called_unreliable(app, frames, tmp_path):
    noise = np.clip(128 + 40 * np.random.default_rng(0).standard_normal((300, 400, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    Image.fromarray(frames["one"]).save(tmp_path / "one.png")
    handlers, session = Handlers(app), Session(app)
    message, whole, *_ = handlers.analyse_photos([str(tmp_path / "noise.png"), str(tmp_path / "one.png")], session)
    assert "No face found in noise.png" in message and whole["visible"]
    message, _, gallery, bars, table, rows, _ = handlers.score_whole_images(session)
    face = session.album.photos[0].faces[0]
    assert face.whole_image and face.confidence < 0.6
    assert "noise.png: unreliable" in message and "unreliable" in bars
    assert gallery[0][1].endswith("(unreliable)") and not gallery[1][1].endswith("(unreliable)")
    assert rows[0]["unreliable"] and not rows[1]["unreliable"] and "whole image" in table


def test_applying_prompts_rescores_uploaded_photos(app, frames, tmp_path):
    Image.fromarray(frames["one"]).save(tmp_path / "one.png")
    session = Session(app)
    session.add_photos([tmp_path / "one.png"])
    before = session.album.bars()
    session.set_prompts("A photo of a [CLS] face.", "happiness\nconfused")
    after = session.album.bars()
    assert "data-class='confused'" in after and after != before
    assert session.album.gallery()[0][1].startswith("one.png · face 1: ")


def test_photos_use_the_photo_model(ckplus_root):
    """Webcam frames go through the fast model, uploaded photos through the accurate one."""
    if not all((ROOT / "assets" / f"{m}.safetensors").is_file() for m in ("fast", "accurate")):
        pytest.skip("needs assets/fast.safetensors and assets/accurate.safetensors")
    fast, accurate = kefer.load("fast"), kefer.load("accurate")
    assert fast.input_size != accurate.input_size
    app = App(fast, photo_recognizer=accurate)
    assert app.photo_detector.crop_size == accurate.input_size and app.detector.crop_size == fast.input_size
    session = Session(app)
    path = Path(tempfile.mkdtemp()) / "face.png"
    Image.fromarray(paste([real_faces(ckplus_root, 1)[0]], [(200, 120, 220)])).save(path)
    assert session.add_photos([path]) == []
    [face] = session.album.photos[0].faces
    np.testing.assert_allclose(face.embedding, accurate.embed([face.crop])[0], atol=1e-5)
    assert not np.allclose(face.embedding, fast.embed([face.crop])[0], atol=1e-2)
    # trained on other templates: each model scores against its own prompts until the tab edits them
    assert fast.templates != accurate.templates
    assert session.stream_prompts.templates == tuple(fast.templates)
    assert session.photo_prompts.templates == tuple(accurate.templates)
    assert session.set_prompts("A face showing [CLS].", ",".join(fast.classes)).startswith("Applied")
    assert session.stream_prompts.templates == session.photo_prompts.templates == ("A face showing [CLS].",)
    session.reset_prompts()
    assert session.photo_prompts.templates == tuple(accurate.templates)


def test_models_with_other_classes_are_refused(checkpoint):
    other = kefer.load(checkpoint)
    other = other.with_prompts(other.encode_prompts(classes=["neutral", "happiness"]))
    with pytest.raises(ValueError, match="same classes"):
        App(kefer.load(checkpoint), photo_recognizer=other)


# ---- neutral calibration ------------------------------------------------------------------------
def test_neutral_calibration_records_a_reference(app):
    anchors, neutral = app.default_prompts.anchors, app.default_prompts.neutral_index
    calib = NeutralCalibration()
    rng = np.random.default_rng(0)
    f_n = anchors[neutral] + 0.3 * rng.standard_normal(anchors.shape[1]).astype(np.float32)
    calib.start()
    recorded = []
    for i in range(10):
        f = f_n + 0.02 * rng.standard_normal(f_n.shape).astype(np.float32)
        recorded.append(f / np.linalg.norm(f))
        calib.add(recorded[-1], now=100 + 0.29 * i)
    assert calib.recording and calib.reference is None
    calib.add(None, now=103.1)
    assert not calib.recording
    ref = calib.reference
    assert ref.count == 10 and ref.source == "recorded" and 0.99 < ref.spread <= 1 + 1e-6
    mean = np.mean(recorded, axis=0)
    np.testing.assert_allclose(ref.embedding, mean / np.linalg.norm(mean), atol=1e-5)
    assert calib.message == (f"Neutral face recorded from 10 frames (spread {ref.spread:.3f}): faces are now read "
                             f"relative to it.")


def test_neutral_calibration_says_what_happens(app):
    """Issue 17.2: waiting for frames, recording n/5, done (n frames, θ), failed (no face)."""
    calib = NeutralCalibration()
    assert calib.message == ""
    calib.start()
    assert calib.message.startswith("Waiting for webcam frames")
    calib.add(None, now=50.0)  # the clock starts with the first frame, not the button
    assert calib.message.startswith("Recording your neutral face: 0/5 frames with a face, 3.0 s left")
    calib.add(app.default_prompts.anchors[0], now=51.0)
    assert calib.message.startswith("Recording your neutral face: 1/5 frames with a face, 2.0 s left")
    calib.add(None, now=53.1)
    assert calib.message.startswith("Calibration failed: a face was found in only 1 of 3 frames")
    assert calib.reference is None


def test_the_calibration_status_follows_the_stream_not_the_bars(app_with_rule, frames, monkeypatch):
    """Issue 17.2 end to end: the button says it waits; each frame's status goes to the status line
    (only when it changed), never into the bars; then the bars use the recording by default."""
    clock = iter(np.arange(0.0, 100.0, 0.5))  # every frame is half a second later
    monkeypatch.setattr(kefer.app.session, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    app = app_with_rule
    handlers, session = Handlers(app), Session(app)
    assert handlers.on_record(session).startswith("Waiting for webcam frames")
    statuses = []
    for _ in range(9):
        _, bars, status, _ = handlers.on_frame(frames["one"], session, True, False)
        assert "Neutral face" not in bars and "Recording" not in bars
        statuses.append(status)
    shown = [s for s in statuses if isinstance(s, str)]
    assert shown[0].startswith("Recording your neutral face: 1/5 frames")
    assert shown[-1].startswith("Neutral face recorded from 7 frames (spread ")
    assert not isinstance(statuses[-1], str)  # unchanged: not sent again
    bars = handlers.on_frame(frames["one"], session, True, True)[1]
    assert "Reference: your recorded neutral face (7 frames)" in bars
    face = session.frame_faces[0]
    assert face.reference == "recorded"
    np.testing.assert_allclose(face.probabilities, app.rec.score(face.embedding[None], session.stream_prompts,
                                                                 session.neutral.reference)[1][0], atol=1e-5)
    assert "<b>Face 1 of 1 (largest)</b>: <span class='kefer-label'>neutral" in bars  # the recorded face
    bars = handlers.on_frame(frames["one"], session, True, False)[1]          # switched back: plain scores
    assert "Reference: off" in bars and session.frame_faces[0].reference == "none"


def test_without_a_recording_or_a_rule_the_bars_say_why_scores_are_plain(checkpoint, app_with_rule, frames,
                                                                         tmp_path):
    session = Session(app_with_rule)
    assert "Reference: estimated from each face" in session.process_frame(frames["one"]).bars
    no_rule = app_with_reference_rule(checkpoint, tmp_path, None)
    plain = Session(no_rule)
    plain.neutral.reference = Reference.from_embeddings(np.ones((1, no_rule.rec.prompts.anchors.shape[1]), np.float32))
    bars = plain.process_frame(frames["one"]).bars
    assert "stores no rule" in bars and plain.frame_faces[0].reference == "none"


# ---- the map ------------------------------------------------------------------------------------
def label_boxes(fig, classes):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return ax.get_window_extent(renderer), [Text.get_window_extent(t, renderer) for t in ax.texts
                                            if t.get_text() in classes]


def test_embedding_map_uses_pca_for_few_faces_and_tsne_for_many(app):
    anchors, classes = app.default_prompts.anchors, app.default_prompts.classes
    rng = np.random.default_rng(0)
    for n, method, faces in ((0, "PCA", "no faces yet"), (5, "PCA", "5 recent faces"), (40, "t-SNE", "40 recent")):
        points = anchors[rng.integers(0, len(anchors), n)] + 0.1 * rng.standard_normal((n, anchors.shape[1]))
        title = embedding_map(points.astype(np.float32), anchors, classes).axes[0].get_title()
        assert title.startswith(f"{TITLE} ({method}): {faces}")


def test_map_labels_stay_inside_the_axes_and_apart_even_for_anchors_on_top_of_each_other(app):
    """Issue 17.6: after a prompt change anchors can coincide; their labels must still be readable."""
    rng = np.random.default_rng(1)
    base = app.default_prompts.anchors[0]
    classes = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    anchors = l2_normalise(base + 0.001 * rng.standard_normal((8, base.shape[0])))
    for n in (0, 6, 40):
        faces = l2_normalise(rng.standard_normal((n, base.shape[0])))
        axes, boxes = label_boxes(embedding_map(faces, anchors, classes, rng.integers(0, 8, n)), classes)
        assert len(boxes) == 8
        for b in boxes:
            assert axes.x0 <= b.x0 and b.x1 <= axes.x1 and axes.y0 <= b.y0 and b.y1 <= axes.y1
        assert not any(boxes[i].overlaps(boxes[j]) for i in range(8) for j in range(i + 1, 8))


def test_the_map_has_a_title_and_an_empty_state_before_any_data(app):
    demo = build_demo(app.rec)
    [plot] = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "map"]
    assert plot.label == "Embedding map" and plot.value is not None  # not an empty plot icon
    figure = layout.placeholder()
    ax = figure.axes[0]
    assert ax.get_title() == TITLE and EMPTY.split()[0] in ax.texts[0].get_text()
    empty = embedding_map(np.zeros((0, app.default_prompts.anchors.shape[1]), np.float32),
                          app.default_prompts.anchors, app.default_prompts.classes)
    assert any("appear here" in t.get_text() for t in empty.axes[0].texts)


def markers(fig, gid: str) -> np.ndarray:
    """The points [n, 2] (data units) the map drew as ``gid``: "webcam" or "photo" faces."""
    points = [c.get_offsets() for c in fig.axes[0].collections if c.get_gid() == gid]
    return np.concatenate(points) if points else np.zeros((0, 2))


@pytest.fixture(scope="module")
def shipped_map(app):
    ref = find_map(app.rec)
    if ref is None:
        pytest.skip(f"no reference map for {app.rec.name} in {MAPS} (kefer lab map builds one)")
    return ref


def test_a_reference_face_is_placed_at_its_own_point(shipped_map):
    """The app's placement reproduces the map: each reference face's own embedding lands on (or very
    near) its own t-SNE point; one far from all faces of its class would not."""
    ref = shipped_map
    scale = np.sqrt(((ref.points - ref.points.mean(0)) ** 2).sum(1).mean())
    error = np.linalg.norm(ref.place(ref.embeddings) - ref.points, axis=1) / scale
    assert np.median(error) < 0.005 and np.percentile(error, 90) < 0.02
    assert len(ref.points) == len(ref.labels) == len(ref.embeddings) >= 500
    np.testing.assert_allclose(np.linalg.norm(ref.embeddings, axis=1), 1.0, atol=1e-3)


def test_placement_is_the_weighted_mean_of_the_nearest_reference_points():
    """A tiny map with orthogonal embeddings: a face equal to one reference face lands on its point, a
    face halfway between two lands halfway between their points."""
    points = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    ref = ReferenceMap(points, np.arange(4), ("a", "b", "c", "d"), np.eye(4, 8, dtype=np.float32), {}, "test", 0.01)
    np.testing.assert_allclose(ref.place(np.eye(4, 8)), points, atol=1e-4)
    np.testing.assert_allclose(ref.place(np.eye(4, 8)[[0]] + np.eye(4, 8)[[1]]), [[5, 0]], atol=1e-4)
    assert ref.place(np.zeros((0, 8))).shape == (0, 2)


def test_shipped_maps_are_small_and_name_the_models_they_fit(shipped_map):
    for path in MAPS.glob("*.npz"):
        assert path.stat().st_size < 1_100_000, path
        ref = ReferenceMap.load(path)
        assert ref.models and ref.classes and "FER+ validation" in ref.source
    int8 = ROOT / "assets" / "accurate-int8.onnx"
    if int8.is_file() and (MAPS / "accurate.npz").is_file():
        assert ReferenceMap.load(MAPS / "accurate.npz").fits(kefer.load("accurate-int8").meta)


def test_photo_faces_and_webcam_faces_appear_on_the_reference_map(app, shipped_map, frames, tmp_path):
    """Issue 27.6: the photos' faces belong on the map (diamonds), the webcam's too (dots)."""
    assert app.map is not None and app.photos_on_map
    Image.fromarray(frames["two"]).save(tmp_path / "two.png")
    session = Session(app)
    session.add_photos([tmp_path / "two.png"])
    fig = session.plot()
    photo = markers(fig, "photo")
    assert len(photo) == 2 and len(markers(fig, "webcam")) == 0
    np.testing.assert_allclose(photo, shipped_map.place(np.stack(session.album.embeddings())), atol=1e-4)
    assert "0 webcam, 2 photo faces" in fig.axes[0].get_title()
    session.process_frame(frames["one"])
    fig = session.plot()
    assert len(markers(fig, "photo")) == 2 and len(markers(fig, "webcam")) == 1
    np.testing.assert_allclose(markers(fig, "webcam"), shipped_map.place(np.stack(session.history)), atol=1e-4)
    np.testing.assert_array_equal(fig.images[0].get_array(), background(shipped_map))   # the fixed background
    assert len(np.unique(background(shipped_map)[..., :3].reshape(-1, 3), axis=0)) > 50   # not blank   # the fixed background


def test_without_a_reference_map_the_map_falls_back_and_says_so(checkpoint, frames, tmp_path, monkeypatch):
    """A user's own model (another network: another fingerprint) finds no map; the map is then a fresh
    layout of the faces and the text anchors, and its title says why."""
    from kefer.backend import update_file_meta

    own = tmp_path / "mine.safetensors"
    shutil.copyfile(checkpoint, own)
    update_file_meta(own, {"val_accuracy": 0.123})
    rec = kefer.load(own)
    assert fingerprint(rec.meta) != fingerprint(kefer.load(checkpoint).meta) and find_map(rec) is None
    monkeypatch.setattr(kefer.app.session, "find_map", lambda r: None)
    app = App(kefer.load(checkpoint))
    Image.fromarray(frames["two"]).save(tmp_path / "two.png")
    session = Session(app)
    session.add_photos([tmp_path / "two.png"])
    session.process_frame(frames["one"])
    fig = session.plot()
    title = fig.axes[0].get_title()
    assert title.startswith(f"{TITLE} (PCA): 3 recent faces") and "No reference map for" in title
    assert len(markers(fig, "photo")) == 2 and len(markers(fig, "webcam")) == 1 and not fig.images


def test_map_is_redrawn_only_when_something_changed(app, frames):
    session = Session(app)
    assert session.plot() is not None
    assert session.plot() is None
    session.process_frame(frames["one"])
    assert session.plot() is not None


# ---- without a model ----------------------------------------------------------------------------
def test_without_a_model_faces_are_found_but_not_scored(frames, tmp_path):
    session = Session(App(None))
    view = session.process_frame(frames["one"])
    assert NO_MODEL in view.bars and (view.image != frames["one"]).any()
    assert session.set_prompts("[CLS]", "happy").startswith("Error")
    assert session.plot() is None
    Image.fromarray(frames["two"]).save(tmp_path / "two.png")
    assert session.add_photos([tmp_path / "two.png"]) == []
    assert [c for _, c in session.album.gallery()] == ["two.png · face 1", "two.png · face 2"]
    assert NO_MODEL in session.album.bars()


# ---- the operating point ------------------------------------------------------------------------
def test_the_operating_checkboxes_change_a_tabs_labels_not_the_shared_model(frames, tmp_path):
    """A model storing margin 1 (every face uncertain): on by default; unticking 'uncertain' in one
    tab names the class there, on the box, above the bars and in the tiles, and nowhere else."""
    from conftest import with_operating

    path = with_operating(tmp_path / "op", strength=0.5, margin=1.0)
    app = App(kefer.load(path, backend="torch"))
    Image.fromarray(frames["two"]).save(tmp_path / "two.jpg")
    h = Handlers(app)
    mine, other = Session(app), Session(app)
    assert app.can_balance and app.can_abstain and mine.balanced and mine.abstain
    for session in (mine, other):
        session.add_photos([tmp_path / "two.jpg"])
    view = mine.process_frame(frames["one"])
    assert view.labels[0].startswith("uncertain (") and "Operating point: balanced (a = 0.5)" in view.bars
    assert "two.jpg · face 1: uncertain (" in mine.album.gallery()[0][1]
    assert mine.album.rows()[0]["label"] == "uncertain"
    gallery, bars, _, rows, _ = h.on_operating(True, False, mine)
    face = mine.frame_faces[0]
    view = mine.process_frame(frames["one"])
    top = mine.frame_faces[0].top_class
    assert view.labels[0] == f"{top} {mine.frame_faces[0].confidence:.2f}" and face.top_class == top
    assert rows[0]["label"] == rows[0]["top_class"] != "uncertain" and "uncertain" not in gallery[0][1]
    assert "Operating point: balanced (a = 0.5)</p>" in bars
    assert other.album.rows()[0]["label"] == "uncertain" and app.rec.prompts.abstain_margin == 1.0
    h.on_operating(False, False, mine)
    raw = mine.album.photos[0].faces[0].probabilities
    plain = kefer.load(path, backend="torch", balanced=False, abstain=False)
    np.testing.assert_allclose(raw, plain.score(mine.album.photos[0].faces[0].embedding[None])[1][0], atol=1e-5)
    assert "Operating point: raw scores" in mine.process_frame(frames["one"]).bars


def test_the_checkboxes_are_off_and_greyed_for_a_model_without_an_operating_point(tmp_path):
    from conftest import with_operating

    app = App(kefer.load(with_operating(tmp_path / "plain", None, None)))   # a prior, no strength, no margin
    parts = components(build_demo(app.rec))
    assert not app.can_balance and not app.can_abstain
    assert parts["balance"].value is False and parts["balance"].interactive is False
    assert parts["abstain"].value is False and parts["abstain"].interactive is False
    assert "raw scores" in parts["header"].value and not Session(app).balanced


# ---- the page and its API -----------------------------------------------------------------------
def components(demo) -> dict:
    return {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}


def test_the_page_says_which_model_and_backend_scores_each_tab(app):
    """Issue 17.9: the stored accuracy with 2 decimals, and the backend, in the header and tabs."""
    demo = build_demo(app.rec, photo_recognizer=app.rec)
    parts = components(demo)
    summary = app.rec.summary
    assert app.rec.backend.name in summary
    if "test_accuracy" in app.rec.meta.get("metrics", {}):
        assert f"{100 * app.rec.meta['metrics']['test_accuracy']:.2f}%" in summary
    shown = html.escape(summary)   # markdown source: "'uncertain'" is written &#x27;uncertain&#x27;
    assert f"Webcam: **{shown}**. Photos: **{shown}**." in parts["header"].value
    assert shown in parts["cam-model"].value and shown in parts["photo-model"].value
    for elem in ("cam", "cam-out", "cam-bars", "calibration", "record", "upload", "gallery", "photo-bars",
                 "photo-json", "template", "classes", "apply", "reset", "text-status", "map"):
        assert elem in parts


def test_without_a_model_the_page_says_so_and_offers_no_prompt_api():
    demo = build_demo(None, note="No kefer model at 'fast'.")
    parts = components(demo)
    assert NO_MODEL in parts["header"].value and "No kefer model at" in parts["header"].value
    assert "cam-model" not in parts and demo.kefer_app.text_loader is None
    assert Session(demo.kefer_app).set_prompts("[CLS]", "happy").startswith("Error")


def test_streams_are_time_limited_and_each_tab_has_its_own_state_cleaned_up_on_unload(app, frames):
    """Issue 17.7: time_limit on the stream, gr.State with a factory and a time to live, unload cleanup."""
    demo = build_demo(app.rec)
    [stream] = [fn for fn in demo.fns.values() if any(t[1] == "stream" for t in fn.targets)]
    assert stream.time_limit == layout.STREAM_TIME_LIMIT and stream.concurrency_limit == layout.STREAMS
    [state] = [b for b in demo.blocks.values() if type(b).__name__ == "State"]
    assert callable(state.value) and state.time_to_live == layout.STATE_TTL
    first, second = state.value(), state.value()
    assert isinstance(first, Session) and first is not second and first.app is second.app
    [unload] = [fn for fn in demo.fns.values() if any(t[1] == "unload" for t in fn.targets)]
    handlers = unload.fn.__self__
    handlers.on_frame(frames["one"], first, True, False, SimpleNamespace(session_hash="tab-1"))
    assert len(first.history) == 1 and demo.kefer_app.sessions == {"tab-1": first}
    unload.fn(SimpleNamespace(session_hash="tab-1"))
    assert demo.kefer_app.sessions == {} and len(first.history) == 0


def test_the_http_api_has_three_named_endpoints_and_no_accidental_ones(app):
    """Issue 17.8: /analyse_photos, /reprompt, /reset are public; frames, clicks, timers are not."""
    demo = build_demo(app.rec)
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == {"analyse_photos", "reprompt", "reset"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readmes_gradio_client_example_runs_against_the_app(app, frames, tmp_path):
    """Issue 17.8: the README's example, run as written against a running app."""
    from gradio_client import Client

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(from gradio_client import.*?)```", readme, re.S).group(1)
    Image.fromarray(frames["two"]).save(tmp_path / "group.jpg")
    demo = build_demo(app.rec)
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
        assert set(api["named_endpoints"]) == {"/analyse_photos", "/reprompt", "/reset"}
        assert not api["unnamed_endpoints"]
        code = code.replace("http://127.0.0.1:7860/", url).replace('"group.jpg"', repr(str(tmp_path / "group.jpg")))
        printed = []
        namespace = {"print": lambda *a: printed.append(a)}
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        demo.close()
    assert len(printed) == 2 and all(row[0] == "group.jpg" for row in printed)
    assert {row[1] for row in printed} == {1, 2}
    assert {"p_confused", "label"} <= set(namespace["faces"][0])


def test_the_readme_says_how_to_get_cpu_wheels_and_keeps_the_default_install_offline():
    """Issue 17.9: the CPU index is in the README only; requirements.txt stays PyPI-only."""
    readme = (ROOT / "README.md").read_text()
    requirements = (ROOT / "requirements.txt").read_text()
    torch_pin = re.search(r"^torch==(\S+)$", requirements, re.M).group(1)
    assert f"pip install torch=={torch_pin} " in readme and "--index-url https://download.pytorch.org/whl/cpu" in readme
    assert "pip install -r requirements.txt && python app.py" in readme
    assert "index-url" not in requirements and "download.pytorch.org" not in requirements


def test_faces_table_shows_an_uncertain_answer_with_its_most_probable_class():
    from kefer.app.render import faces_table

    row = {"photo": "a.png", "face": 1, "whole_image": False, "x0": 1, "y0": 2, "x1": 30, "y1": 40,
           "p_fear": 0.41, "p_surprise": 0.39, "label": "uncertain", "top_class": "fear"}
    table = faces_table([row, {"photo": "b.png", "face": 1, "whole_image": False, "x0": 0, "y0": 0, "x1": 9,
                               "y1": 9, "label": None}])
    assert "| a.png | 1 | 1, 2, 30, 40 | uncertain | fear | 0.41 |" in table
    assert "| b.png | 1 | 0, 0, 9, 9 | – | – | – |" in table
