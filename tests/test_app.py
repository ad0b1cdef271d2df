"""The app's logic without a browser: per-session frame processing, photos, prompts, calibration, map."""
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import kefer
import kefer.demo
from kefer.demo import NO_MODEL, App, NeutralCalibration, Session, build_demo, embedding_map
from test_faces import GREY, ferplus_faces, paste, real_faces

ROOT = Path(__file__).resolve().parents[1]


def write_untrained_checkpoint(path: Path) -> None:
    """A checkpoint exactly as train.py writes it (preset 'cpu': ResNet-18 at 64 px, MiniLM text),
    with the encoder left at its random initialisation: the app's tests need a model, not a good one."""
    from kefer.checkpoint import save_model
    from kefer.config import preset
    from kefer.train.fit import checkpoint_meta
    from kefer.model import KEFERModel, build_encoder
    from kefer.text import encode_classes, load_text_encoder

    cfg = preset("cpu")
    classes = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    text_encoder = load_text_encoder(cfg.text_encoder)
    text, prompts = encode_classes(text_encoder, classes, cfg.templates)
    torch.manual_seed(0)
    model = KEFERModel(build_encoder(cfg.encoder, cfg.img_size), len(classes), text)
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


@pytest.fixture(scope="module")
def frames(ckplus_root, ferplus_root):
    """Real faces in 640x480 frames: one face, two faces, none."""
    one, other = real_faces(ckplus_root, 1)[0], ferplus_faces(ferplus_root, 1)[0]
    return {
        "one": paste([one], [(200, 120, 220)]),
        "two": paste([one, other], [(20, 100, 160), (330, 60, 260)]),
        "none": np.full((480, 640, 3), GREY, np.uint8),
    }


def test_frame_with_a_face_gets_a_label_and_bars_for_every_class(app, frames):
    session = Session(app)
    annotated, bars = session.process_frame(frames["one"])
    assert annotated.shape == (480, 640, 3) and (annotated != frames["one"]).any()
    assert "Face 1 of 1 (largest)" in bars
    for name in app.rec.classes:
        assert f"data-class='{name}'" in bars
    assert len(session.history) == 1


def test_frames_with_no_face_or_odd_formats_give_messages(app, frames):
    session = Session(app)
    annotated, bars = session.process_frame(frames["none"])
    assert "No face in view" in bars
    np.testing.assert_array_equal(annotated, frames["none"])
    rgba = np.dstack([frames["one"], np.full((480, 640), 255, np.uint8)])
    assert "Face 1 of 1" in session.process_frame(rgba)[1]
    assert "Face 1 of 1" in session.process_frame(frames["one"][:, :, 0])[1]


def test_clicking_a_face_selects_it_until_it_leaves(app, frames):
    session = Session(app)
    assert "Face 1 of 2 (largest)" in session.process_frame(frames["two"])[1]
    small = next(f for f in session.frame_faces if f.box[0] < 300)
    session.select_at((small.box[0] + small.box[2]) / 2, (small.box[1] + small.box[3]) / 2)
    assert "Face 2 of 2</b>" in session.process_frame(frames["two"])[1]
    session.select_at(5, 5)  # outside every face: back to the largest
    assert "Face 1 of 2 (largest)" in session.process_frame(frames["two"])[1]


def test_smoothing_averages_embeddings_over_frames(app, frames, ckplus_root):
    other = paste(real_faces(ckplus_root, 2, "surprise")[1:], [(200, 120, 220)])
    raw, smooth = Session(app), Session(app)
    for frame in (frames["one"], other):
        raw.process_frame(frame, smoothing=False)
        smooth.process_frame(frame, smoothing=True)
    first, second = raw.history
    expected = (first + second) / np.linalg.norm(first + second)
    np.testing.assert_allclose(smooth.history[1], expected, atol=1e-5)


def test_prompt_edits_are_validated_zero_shot_and_per_session(app, frames):
    session, other = Session(app), Session(app)
    before = session.prompts
    assert session.set_prompts("A photo of a face.", "happy").startswith("Error")
    assert session.set_prompts(app.rec.template, " \n , ").startswith("Error")
    assert session.prompts is before

    message = session.set_prompts("A person is feeling [CLS].", "neutral\nhappiness\nconfused")
    assert message.startswith("Applied: 3 classes")
    assert session.prompts.anchors.shape == (3, before.anchors.shape[1])
    bars = session.process_frame(frames["one"])[1]
    assert "data-class='confused'" in bars and "data-class='surprise'" not in bars
    assert "data-class='confused'" not in other.process_frame(frames["one"])[1]
    assert app.rec.classes == before.classes  # the shared recogniser is back to its own prompts

    session.reset_prompts()
    assert session.prompts is app.default_prompts


def test_reencoding_the_checkpoint_prompts_reproduces_its_anchors(app):
    again = app.encode(app.rec.template, app.rec.classes)
    np.testing.assert_allclose(again.anchors, app.default_prompts.anchors, atol=1e-5)


def test_two_sessions_streaming_at_once_keep_their_own_prompts(app, frames):
    sessions = [Session(app), Session(app)]
    sessions[1].set_prompts("This person is [CLS].", "calm\nconfused")
    results = [[], []]

    def stream(i):
        for _ in range(4):
            results[i].append(sessions[i].process_frame(frames["one"])[1])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all("data-class='contempt'" in bars and "confused" not in bars for bars in results[0])
    assert all("data-class='confused'" in bars and "contempt" not in bars for bars in results[1])


def test_photos_of_every_kind_are_scored_or_explained(app, frames, tmp_path):
    Image.fromarray(frames["two"]).save(tmp_path / "two.jpg")
    Image.fromarray(np.dstack([frames["one"], np.full((480, 640), 200, np.uint8)])).save(tmp_path / "rgba.png")
    cv2.imwrite(str(tmp_path / "grey16.png"), frames["one"][:, :, 0].astype(np.uint16) * 257)
    Image.fromarray(frames["none"]).save(tmp_path / "empty.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    session = Session(app)
    names = ["two.jpg", "rgba.png", "grey16.png", "empty.png", "broken.jpg"]
    messages = session.add_photos([tmp_path / n for n in names])
    assert len(messages) == 1 and "broken.jpg" in messages[0]
    assert [len(p.faces) for p in session.photos] == [2, 1, 1, 0]

    gallery, bars, table = session.photo_views()
    assert len(gallery) == 4 and "empty.png: no face found" in gallery[3][1]
    assert "two.jpg: largest face" in bars and table.count("\n| two.jpg |") == 2
    session.photo_index = 3
    assert "No face found in empty.png" in session.photo_bars()

    session.score_whole_images()
    assert session.photos[3].whole and session.photos[3].embeddings.shape[0] == 1
    assert "whole image" in session.photo_views()[2]
    assert len(session.history) == 5


def test_a_small_face_in_a_6000x4000_photo_is_found(app, ckplus_root, tmp_path):
    photo = np.full((4000, 6000, 3), GREY, np.uint8)
    photo[1800:2100, 4000:4300] = cv2.resize(real_faces(ckplus_root, 1)[0], (300, 300))
    Image.fromarray(photo).save(tmp_path / "huge.jpg", quality=90)
    session = Session(app)
    assert session.add_photos([tmp_path / "huge.jpg"]) == []
    [found] = session.photos
    assert found.rgb.shape == (1280, 1920, 3) and len(found.faces) == 1
    assert 4000 * 0.32 < found.faces[0].box[0] < 4300 * 0.32


def test_applying_prompts_rescores_uploaded_photos(app, frames, tmp_path):
    Image.fromarray(frames["one"]).save(tmp_path / "one.png")
    session = Session(app)
    session.add_photos([tmp_path / "one.png"])
    before = session.photo_bars()
    session.set_prompts("A photo of a [CLS] face.", "happiness\nconfused")
    after = session.photo_bars()
    assert "data-class='confused'" in after and after != before


def test_neutral_calibration_records_a_mean_and_scores_directions(app):
    anchors, neutral = app.default_prompts.anchors, app.default_prompts.neutral_index
    calib = NeutralCalibration()
    rng = np.random.default_rng(0)
    f_n = anchors[neutral] + 0.3 * rng.standard_normal(anchors.shape[1]).astype(np.float32)
    calib.start(now=0.0)
    for i in range(10):
        f = f_n + 0.02 * rng.standard_normal(f_n.shape).astype(np.float32)
        calib.add(f / np.linalg.norm(f), now=0.29 * i)
    assert calib.recording and calib.mean is None
    calib.add(None, now=3.1)
    assert not calib.recording and "from 10 frames" in calib.message

    happy = [k for k in range(len(anchors)) if k != neutral][0]
    towards = calib.mean + 0.5 * (anchors[happy] - anchors[neutral])
    faces = np.stack([calib.mean, towards / np.linalg.norm(towards)])
    rel = calib.relative(faces, anchors, neutral)
    assert rel[0, neutral] == pytest.approx(1.0, abs=1e-5)
    assert rel[1].argmax() == happy and rel[1, happy] > 0.99  # Δf lies along Δt of 'happy'
    assert calib.labels(rel, neutral).tolist() == [neutral, happy]


def test_neutral_calibration_without_faces_asks_to_retry():
    calib = NeutralCalibration()
    calib.start(now=0.0)
    calib.add(None, now=1.0)
    calib.add(None, now=3.1)
    assert calib.mean is None and "Only 0 frames" in calib.message


def test_relative_mode_in_the_stream(app, frames, monkeypatch):
    clock = iter(np.arange(0.0, 100.0, 0.5))  # every frame is half a second later
    monkeypatch.setattr(kefer.demo, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    session = Session(app)
    assert "Record your neutral face" in session.process_frame(frames["one"], relative=True)[1]
    session.neutral.start(now=0.0)
    assert "Recording your neutral face" in session.process_frame(frames["one"])[1]
    for _ in range(6):
        session.process_frame(frames["one"])
    assert session.neutral.mean is not None
    bars = session.process_frame(frames["one"], relative=True)[1]
    assert "Relative to your neutral" in bars and ">relative<" in bars
    assert "<b>Face 1 of 1 (largest)</b>: neutral" in bars  # the very face that was recorded


def test_embedding_map_uses_pca_for_few_faces_and_tsne_for_many(app):
    anchors, classes = app.default_prompts.anchors, app.default_prompts.classes
    rng = np.random.default_rng(0)
    for n, method in ((0, "PCA"), (5, "PCA"), (40, "t-SNE")):
        faces = anchors[rng.integers(0, len(anchors), n)] + 0.1 * rng.standard_normal((n, anchors.shape[1]))
        title = embedding_map(faces.astype(np.float32), anchors, classes).axes[0].get_title()
        assert title.startswith(f"{method}: {n} recent faces")


def test_map_is_redrawn_only_when_something_changed(app, frames):
    session = Session(app)
    assert session.plot() is not None
    assert session.plot() is None
    session.process_frame(frames["one"])
    assert session.plot() is not None


def test_without_a_model_faces_are_found_but_not_scored(frames):
    session = Session(App(None))
    annotated, bars = session.process_frame(frames["one"])
    assert NO_MODEL in bars and (annotated != frames["one"]).any()
    assert session.set_prompts("[CLS]", "happy").startswith("Error")
    assert session.plot() is None


def test_build_demo_with_and_without_a_model(app):
    assert build_demo(app.rec, note="test").fns
    assert build_demo(None, note="no model").fns


def test_photos_use_the_photo_model(ckplus_root):
    """Webcam frames go through the fast model, uploaded photos through the accurate one."""
    if not (ROOT / "assets" / "accurate.safetensors").is_file() or not (ROOT / "assets" / "fast.safetensors").is_file():
        pytest.skip("needs assets/fast.safetensors and assets/accurate.safetensors")
    fast, accurate = kefer.load("fast"), kefer.load("accurate")
    assert fast.input_size != accurate.input_size
    app = App(fast, photo_recognizer=accurate)
    assert app.photo_detector.crop_size == accurate.input_size and app.detector.crop_size == fast.input_size
    session = Session(app)
    face = real_faces(ckplus_root, 1)[0]
    path = Path(tempfile.mkdtemp()) / "face.png"
    Image.fromarray(paste([face], [(200, 120, 220)])).save(path)
    assert session.add_photos([path]) == []
    photo = session.photos[0]
    assert len(photo.faces) == 1
    np.testing.assert_allclose(photo.embeddings, accurate.embed([photo.faces[0].crop]), atol=1e-5)
    assert not np.allclose(photo.embeddings, fast.embed([photo.faces[0].crop]), atol=1e-2)


def test_models_with_other_prompts_are_refused(checkpoint):
    other = kefer.load(checkpoint)
    other.set_prompts(classes=["neutral", "happiness"])
    with pytest.raises(ValueError, match="same classes"):
        App(kefer.load(checkpoint), photo_recognizer=other)
