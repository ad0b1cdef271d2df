"""End to end on real FER+ data: train.py, run outputs, evaluation, the Python API, resume."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import kefer
from kefer.recognizer import ASSETS

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "cpu", "--img-size", "32", "--max-train-samples", "400", "--batch-size", "32"]   # 32 px: CI time


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, **kw)


def history(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(ferplus_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    r = run_cli("train.py", "--dataset", "ferplus", "--data-root", str(ferplus_root), *TINY,
                "--epochs", "2", "--output", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_run_writes_every_output_and_the_loss_falls(run):
    for name in ("config.json", "history.csv", "metrics.json", "best.safetensors", "last.pt",
                 "confusion_matrix.png", "tsne.png", "curves.png"):
        assert (run / name).is_file(), name
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"ce", "t", "sc", "train_accuracy", "val_accuracy"} <= set(rows[0])
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("val_accuracy", "test_accuracy", "test_mean_accuracy", "per_class_accuracy", "confusion_matrix"):
        assert key in metrics
    assert metrics["n"] == 3137 and np.asarray(metrics["confusion_matrix"]).sum() == 3137
    assert metrics["val_accuracy"] == max(float(r["val_accuracy"]) for r in rows)   # exact: a copy of the best row's
    assert json.loads((run / "config.json").read_text())["max_train_samples"] == 400
    from kefer.checkpoint import read_meta

    prior = read_meta(run / "best.safetensors")["operating"]["class_prior"]   # its 400 training faces' frequencies
    assert set(prior) <= set(metrics["classes"]) and sum(prior.values()) == pytest.approx(1)
    assert all(400 * p == pytest.approx(round(400 * p)) for p in prior.values())


def test_evaluate_cli_reloads_the_checkpoint(run):
    r = run_cli("-m", "kefer", "evaluate", "--checkpoint", str(run), "--dataset", "ferplus")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["test_accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["test_accuracy"])


def test_mirror_averaging_is_mirror_invariant_and_evaluates(run, ckplus_root):
    """flip=True averages a face with its mirror image: a face and its mirror then score the same."""
    from PIL import Image, ImageOps
    face = Image.open(next((ckplus_root / "happiness").iterdir()))
    plain, flipped = kefer.load(run), kefer.load(run, flip=True)
    assert "mirror-averaged" in flipped.summary and "mirror-averaged" not in plain.summary
    both = flipped.embed([face, ImageOps.mirror(face)])
    np.testing.assert_allclose(both[0], both[1], atol=1e-4)
    assert not np.allclose(plain.embed(face), plain.embed(ImageOps.mirror(face)), atol=1e-3)
    r = run_cli("-m", "kefer", "evaluate", "--checkpoint", str(run), "--dataset", "ckplus", "--data-root", str(ckplus_root),
                "--flip")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["flip"] is True and out["n"] == 873 and 0 < out["test_accuracy"] <= 1


def test_cross_dataset_to_ckplus_seven_classes(run, ckplus_root, tmp_path):
    r = run_cli("-m", "kefer", "evaluate", "--checkpoint", str(run / "best.safetensors"), "--dataset", "ckplus",
                "--data-root", str(ckplus_root), "--plots", str(tmp_path / "plots"))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert len(out["classes"]) == 7 and "contempt" not in out["classes"] and out["n"] == 873
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file() and (tmp_path / "plots" / "tsne.png").is_file()


def test_python_api(run, ferplus_root):
    rec = kefer.load(run)
    assert rec.classes[0] == "neutral" and len(rec.classes) == 8 and rec.prompts.neutral_index == 0
    face = ferplus_root / "FER2013Test" / sorted(os.listdir(ferplus_root / "FER2013Test"))[0]
    from PIL import Image
    pil = Image.open(face)
    grey = np.asarray(pil)
    rgb = np.stack([grey] * 3, -1)
    probs = rec.predict([pil, grey, rgb])
    assert probs.shape == (3, 8) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(probs[0], probs[2], atol=1e-5)
    emb = rec.embed(rgb)
    assert emb.shape == (1, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)

    zero_shot = rec.with_prompts(rec.encode_prompts(classes=[*rec.classes, "confusion"]))
    assert zero_shot.predict(pil).shape == (1, 9) and zero_shot.classes[-1] == "confusion"
    reworded = zero_shot.with_prompts(zero_shot.encode_prompts(template="A face showing [CLS]."))
    assert not np.allclose(zero_shot.prompts.anchors, reworded.prompts.anchors)
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        rec.encode_prompts(template="no placeholder")
    assert len(rec.classes) == 8 and rec.predict(pil) == pytest.approx(probs[:1], abs=1e-5)   # unchanged


def test_load_shipped_models_by_name():
    if not (ASSETS / "accurate.safetensors").exists():
        with pytest.raises(FileNotFoundError, match="train.py"):
            kefer.load()
        return
    default, fast = kefer.load(), kefer.load("fast")
    assert default.name == "accurate" and kefer.load("default").name == "accurate"
    assert default.classes == fast.classes and len(default.classes) == 8
    assert default.meta["encoder"] == "facenet-casia" and fast.meta["encoder"] == "resnet18"
    assert "FER+ test" in default.summary
    with pytest.raises(FileNotFoundError, match="accurate"):
        kefer.load("no-such-model")


def test_shipped_accurate_model_scores_what_its_header_says(ferplus_root):
    """The FER+ test accuracy stored in assets/accurate.safetensors (and quoted in the docs) is re-measured."""
    if not (ASSETS / "accurate.safetensors").exists():
        pytest.skip("needs assets/accurate.safetensors")
    from kefer.train.evaluate import evaluate

    rec = kefer.load()
    assert rec.meta["metrics"]["measured_on"] == "this file"
    out = evaluate(rec, "ferplus", ferplus_root, split="test")
    assert out["n"] == 3137 and out["test_accuracy"] == pytest.approx(rec.meta["metrics"]["test_accuracy"], abs=1e-3)


def test_time_budget_cuts_epochs_after_warmup():
    from kefer.train.config import preset
    from kefer.train.schedule import fit_to_budget

    cfg = preset("cpu", epochs=40, time_budget=10)  # 10 minutes; 60 s spent on the warm-up epoch
    assert fit_to_budget(cfg, epoch_seconds=60, spent_seconds=60).epochs == 1 + 8  # 540 s - 60 s left
    assert fit_to_budget(cfg, epoch_seconds=5, spent_seconds=5).epochs == 40         # fits: unchanged
    assert fit_to_budget(cfg, epoch_seconds=900, spent_seconds=900).epochs == 2      # at least one more


def test_time_budget_run_records_the_epochs_it_ran(tiny_folder, tmp_path):
    out = tmp_path / "budget"
    r = run_cli("train.py", *tiny_run(tiny_folder, out, 50), "--time-budget", "0.0001")   # 6 ms: one more epoch
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 epochs instead of 50" in r.stdout
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert len(history(out)) == 2 and not (out / "tsne.png").exists()


def test_training_on_vote_distributions(ferplus_root, tmp_path, train_here):
    assert train_here(["--dataset", "ferplus", "--data-root", str(ferplus_root), *TINY, "--max-train-samples", "100",
                       "--epochs", "1", "--labels", "votes", "--no-plots", "--no-test", "--output", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["labels"] == "votes"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < float(history(tmp_path)[0]["ce"]) and 0 < metrics["val_accuracy"] and "test_accuracy" not in metrics


def test_init_refuses_a_checkpoint_of_another_model(run):
    import torch
    from kefer.train.config import Config
    from kefer.train.fit import init_from_checkpoint
    from kefer.models.network import KEFERModel
    from kefer.models.factory import create_encoder

    rec = kefer.load(run)
    cfg = Config.from_dict({**rec.meta["config"], "init": str(run)})
    model = KEFERModel(create_encoder(cfg.encoder, cfg.img_size, pretrained=False), 3, torch.randn(3, 384))
    init_from_checkpoint(model, cfg, rec.meta["text_encoder"])   # other classes: only the text differs
    assert torch.equal(model.proj.weight, rec.model.proj.weight) and model.text.shape == (3, 384)
    with pytest.raises(ValueError, match="the checkpoint has"):
        init_from_checkpoint(model, cfg, "clip:ViT-B-32")
    with pytest.raises(ValueError, match="the checkpoint has"):
        init_from_checkpoint(model, Config.from_dict({**rec.meta["config"], "init": str(run), "encoder": "resnet34"}),
                             rec.meta["text_encoder"])
    classifier = KEFERModel(create_encoder(cfg.encoder, cfg.img_size, pretrained=False), 8)
    with pytest.raises(ValueError, match="does not fit"):
        init_from_checkpoint(classifier, cfg, rec.meta["text_encoder"])


def test_init_fine_tunes_a_cnn_at_another_input_size(run, caplog):
    """A CNN's weights fit any input size: --init at 96 px from a 32 px run loads them and says so."""
    import torch
    from kefer.train.config import Config
    from kefer.train.fit import init_from_checkpoint
    from kefer.models.network import KEFERModel
    from kefer.models.factory import create_encoder

    rec = kefer.load(run)
    cfg = Config.from_dict({**rec.meta["config"], "init": str(run), "img_size": 96})
    model = KEFERModel(create_encoder(cfg.encoder, 96, pretrained=False), 3, torch.randn(3, 384))
    with caplog.at_level("INFO", logger="kefer"):
        init_from_checkpoint(model, cfg, rec.meta["text_encoder"])
    assert torch.equal(model.proj.weight, rec.model.proj.weight)
    assert "trained at 32 px; this run fine-tunes it at 96 px" in caplog.text


def test_experiment_runner_and_report(ferplus_root, ckplus_root, tmp_path):
    """Two rows of table2 at a tiny scale, then the report: raw JSON, a table and a plot."""
    from kefer.lab import experiments, report

    root, out = tmp_path / "runs", tmp_path / "results"
    experiments.EXPERIMENTS["tiny"] = ("tiny", ["classifier", "full"])
    try:
        experiments.run(["tiny"], [0], "small", root, parallel=2, deadline=None, device="cpu",
                        extra=["--device", "cpu", "--data-root", str(ferplus_root), "--max-train-samples", "64",
                               "--epochs", "1", "--img-size", "32", "--no-plots"])
        for row in ("classifier", "full"):
            assert (root / "small" / row / "seed0" / "ckplus.json").is_file(), (root / "small" / row / "seed0" / "log.txt").read_text()[-2000:]
        md = tmp_path / "RESULTS.md"
        md.write_text("intro\n<!-- table:tiny:small -->\nold\n<!-- /table:tiny:small -->\nend\n")
        out.mkdir()
        report.report(root, out, md)
    finally:
        del experiments.EXPERIMENTS["tiny"]
    record = json.loads((out / "raw" / "small-full-seed0.json").read_text())
    assert record["config"]["max_train_samples"] == 64 and record["ckplus"]["n"] > 0
    text = md.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("end\n")
    assert "| classifier | `--losses classifier` | 1 |" in text
    assert (out / "small-tiny.png").is_file() and (out / "runs.csv").read_text().count("\n") == 3



@pytest.fixture(scope="module")
def tiny_folder(ferplus_root, tmp_path_factory) -> Path:
    """A ``folder`` dataset of real FER+ faces: {train,val,test}/{neutral,happiness,surprise}/,
    16/8/8 images a class, for runs of a few seconds."""
    from kefer.train.data import ferplus

    root = tmp_path_factory.mktemp("tiny")
    for split, n in (("train", 16), ("val", 8), ("test", 8)):
        samples = ferplus.read_split(ferplus_root, split)
        for k, name in enumerate(ferplus.CLASSES[:3]):
            (root / split / name).mkdir(parents=True)
            for path in [p for p, y in samples if y == k][:n]:
                shutil.copy(path, root / split / name / path.name)
    return root


def tiny_run(tiny_folder, out: Path, epochs: int) -> list[str]:
    return ["--dataset", "folder", "--data-root", str(tiny_folder), "--preset", "cpu", "--img-size", "32",
            "--batch-size", "8", "--epochs", str(epochs), "--text-encoder", "orthogonal", "--no-plots",
            "--device", "cpu", "--output", str(out)]


def assert_same_run(a: Path, b: Path, tol: float = 1e-6) -> None:
    """Two runs of one seed ended alike, to ``tol``: every history number but the timings, every
    weight of last.pt, and the test metrics."""
    import torch

    rows_a, rows_b = history(a), history(b)
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        assert set(ra) == set(rb)
        for key in set(ra) - {"seconds"}:
            assert float(ra[key]) == pytest.approx(float(rb[key]), abs=tol), (ra["epoch"], key)
    wa, wb = (torch.load(r / "last.pt", weights_only=True)["model"] for r in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=tol, rtol=0, msg=key)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma["confusion_matrix"] == mb["confusion_matrix"] and ma["best_epoch"] == mb["best_epoch"]
    for key in ("val_accuracy", "test_accuracy", "test_mean_accuracy"):
        assert ma[key] == pytest.approx(mb[key], abs=tol), key


def test_resume_after_a_kill_ends_where_an_uninterrupted_run_ends(tiny_folder, tmp_path):
    """SIGKILL part-way, then --resume (with a flag that differs, which is ignored with a warning):
    the same history, weights and test metrics as the same seed run without a stop."""
    env = {**os.environ, "KEFER_CACHE": str(tmp_path / "cache")}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = run_cli("train.py", *tiny_run(tiny_folder, whole, 4), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    proc = subprocess.Popen([sys.executable, "train.py", *tiny_run(tiny_folder, killed, 4)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (killed / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(history(killed))
    assert 1 <= done < 4 and not (killed / "metrics.json").exists(), "the run should have been killed part-way"
    r = run_cli("train.py", *tiny_run(tiny_folder, killed, 4), "--lr", "0.5", "--resume", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed_after = int(r.stdout.split("after epoch ")[1].split("/")[0])
    assert f"resuming {killed} after epoch {resumed_after}/4" in r.stdout and resumed_after >= 1
    assert "ignored, as they differ from it: lr=0.5 (saved 0.02)" in r.stdout
    assert_same_run(whole, killed)


def test_a_kill_while_saving_keeps_the_previous_checkpoint(tiny_folder, tmp_path, monkeypatch, caplog, train_here):
    """A run that dies while writing epoch 2's last.pt leaves epoch 1's intact and no temp file; its
    resume ends as the uninterrupted run (in-process, through kefer train's main)."""
    import torch

    monkeypatch.setenv("KEFER_CACHE", str(tmp_path / "cache"))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert train_here(tiny_run(tiny_folder, whole, 3)) == 0
    real_save, saves = torch.save, []

    def dies_mid_write(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) == 2:
            Path(f).write_bytes(b"the first bytes of a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        train_here(tiny_run(tiny_folder, killed, 3))
    monkeypatch.setattr(torch, "save", real_save)
    state = torch.load(killed / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and len(state["history"]) == 1 and not list(killed.glob("*.tmp"))
    with caplog.at_level("INFO", logger="kefer"):
        assert train_here([*tiny_run(tiny_folder, killed, 3), "--resume"]) == 0
    assert f"resuming {killed} after epoch 1/3" in caplog.text and "ignored" not in caplog.text
    assert_same_run(whole, killed)


@pytest.mark.parametrize("args, message", [
    (["--data-root", "/nonexistent/ferplus"], "Data root"),
    (["--encoder", "resnet-eighteen"], "Unknown encoder"),
    (["--template", "A photo of a face."], "[CLS]"),
    (["--losses", "ce,magic"], "Unknown loss term"),
])
def test_bad_input_is_a_clear_error(args, message, tmp_path):
    r = run_cli("train.py", "--dataset", "ferplus", *TINY, "--epochs", "1", "--output", str(tmp_path), *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert "reading ferplus" not in r.stderr   # said before any data is read


def test_export_half_precision_keeps_predictions(run, ferplus_root, tmp_path):
    r = run_cli("-m", "kefer", "export", str(run), str(tmp_path / "m.safetensors"), "--command", "train.py ...")
    assert r.returncode == 0, r.stderr[-3000:]
    shipped = kefer.load(tmp_path / "m.safetensors")
    assert shipped.meta["train_command"] == "train.py ..." and "test_accuracy" in shipped.meta["metrics"]
    assert (tmp_path / "m.safetensors").stat().st_size < 0.6 * (run / "best.safetensors").stat().st_size
    faces = [np.asarray(kefer.recognizer.as_rgb(np.full((48, 48), v, np.uint8))) for v in (40, 200)]
    assert np.allclose(shipped.predict(faces), kefer.load(run).predict(faces), atol=2e-2)


def test_config_from_dict_refuses_unknown_keys():
    from kefer.train.config import Config

    assert Config.from_dict({"epochs": 3, "lr": 0.1}) == Config(epochs=3, lr=0.1)
    with pytest.raises(ValueError, match=r"Unknown config key\(s\) \['epoch', 'lr_max'\]"):
        Config.from_dict({"epoch": 3, "lr_max": 0.1})


def test_train_flags_are_the_config_fields():
    """Each flag is a Config field with flag metadata, typed by its annotation; unset flags override nothing."""
    import argparse

    from kefer.train.config import Config, add_flags, flag_overrides
    from kefer.text import PAPER_TEMPLATES

    p = argparse.ArgumentParser()
    add_flags(p)
    assert flag_overrides(p.parse_args([])) == {}
    args = p.parse_args(["--img-size", "96", "--lr", "0.1", "--no-amp", "--compile", "--classes", "neutral, anger",
                         "--lambdas", "t=0.5,sc=2", "--template", "paper", "--time-budget", "7", "--labels", "votes"])
    assert flag_overrides(args) == {"img_size": 96, "lr": 0.1, "amp": False, "compile": True,
                                    "classes": ["neutral", "anger"], "lambdas": {"t": 0.5, "sc": 2.0},
                                    "templates": PAPER_TEMPLATES, "time_budget": 7.0, "labels": "votes"}
    assert flag_overrides(p.parse_args(["--template", "A [CLS] face.", "--template", "[CLS]!"]))["templates"] == [
        "A [CLS] face.", "[CLS]!"]
    with pytest.raises(SystemExit):
        p.parse_args(["--balance", "smote"])
    flags = {a.dest for a in p._actions if a.dest != "help"}
    assert flags <= {f for f in Config.__dataclass_fields__} and "momentum" not in flags


def test_text_augmentation_draws_a_template_per_batch(tiny_folder, tmp_path, train_here, capsys):
    """--template-sampling batch trains against each template's own anchors in turn (a different run
    from their mean), keeps the mean as the model's anchors, and needs several templates."""
    import torch
    from kefer.text import class_embeddings

    templates = ["--template", "This person is [CLS].", "--template", "A photo of a [CLS] face."]
    runs = {}
    for sampling in ("mean", "batch"):
        out = tmp_path / sampling
        assert train_here([*tiny_run(tiny_folder, out, 1), *templates, "--template-sampling", sampling,
                           "--ce-adjust", "1"]) == 0
        runs[sampling] = out
    assert history(runs["mean"])[0]["loss"] != history(runs["batch"])[0]["loss"]
    rec = kefer.load(runs["batch"], backend="torch")
    mean, _, _ = class_embeddings("orthogonal", rec.classes, ["This person is [CLS].", "A photo of a [CLS] face."])
    torch.testing.assert_close(torch.from_numpy(rec.prompts.anchors), mean)
    capsys.readouterr()
    assert train_here([*tiny_run(tiny_folder, tmp_path / "one", 1), "--template-sampling", "batch"]) == 2
    assert "more than once" in capsys.readouterr().err


def test_a_class_left_out_of_training_is_added_back_by_text(tiny_folder, tmp_path, train_here):
    """Trained on 2 of 3 classes, evaluated on all 3 with the third added by its prompt alone:
    the trained anchors stay as trained (orthogonal prototypes too) and the third class is scored."""
    out = tmp_path / "zs"
    assert train_here([*tiny_run(tiny_folder, out, 1), "--classes", "neutral,happiness"]) == 0
    r = run_cli("-m", "kefer", "evaluate", "--checkpoint", str(out), "--dataset", "folder", "--data-root",
                str(tiny_folder), "--add-class", "surprise", "--output", str(tmp_path / "zs.json"))
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "zs.json").read_text())
    assert metrics["classes"] == ["neutral", "happiness", "surprise"] and metrics["n"] == 24
    rec = kefer.load(out, backend="torch")
    trained = rec.prompts.anchors
    rec = rec.with_prompts(rec.encode_prompts(classes=rec.classes + ["surprise"]))
    np.testing.assert_allclose(rec.prompts.anchors[:2], trained, atol=1e-6)
    assert rec.prompts.zero_shot == ("surprise",)


def test_zero_shot_report_reads_where_the_left_out_class_goes():
    from kefer.lab import experiments, report

    classes = experiments.FERPLUS_CLASSES
    cm = np.eye(8, dtype=int) * 10
    cm[6] = [5, 0, 2, 1, 0, 0, 2, 0]   # fear: 2 of 10 recalled, half read as neutral
    record = {"row": "zs-fear", "zero_shot": {"classes": classes, "confusion_matrix": cm.tolist(),
                                              "per_class_auc": {"fear": 0.7},
                                              "test_accuracy": 0.9}, "ferplus": {"test_accuracy": 0.95}}
    name, recall, share, _ = report.where_left_out_goes(record)
    assert name == "fear" and recall == pytest.approx(0.2) and share[0] == pytest.approx(0.5)
    table = report.zero_shot_table("small", {"zs-fear": [record, record]})
    assert "| zs-fear | minilm | 2 | fear | 20.00 ± 0.00 | 12.5 | 0.700 ± 0.000 | neutral 50%, surprise 20%, fear 20% |" in table
    assert "| zs-contempt | | 0 | contempt | not run | | | | | |" in table


def test_export_measures_a_model_file_in_place_with_its_operating_point(run, tmp_path):
    """``kefer.export FILE --evaluate`` stores the metrics of FILE as loaded: raw (those of the run
    itself, re-measured), then balanced once an operating point is written; the tensors stay as
    they were."""
    from kefer.checkpoint import load_model
    from kefer.lab.operating import write

    path = tmp_path / "m.safetensors"
    shutil.copy(run / "best.safetensors", path)
    r = run_cli("-m", "kefer", "export", str(path), "--evaluate")
    assert r.returncode == 0, r.stderr[-3000:]
    raw = kefer.load(path).meta["metrics"]
    assert raw["measured_on"] == "this file" and "raw scores" in raw["operating_point"]
    own = json.loads((run / "metrics.json").read_text())
    assert raw["test_accuracy"] == pytest.approx(own["test_accuracy"], abs=0.01)
    assert raw["val_accuracy"] == pytest.approx(own["val_accuracy"], abs=0.01)
    before = load_model(path)[0]
    write(path, {"balance": {"strength": 1.0}})
    assert run_cli("-m", "kefer", "export", str(path), "--evaluate").returncode == 0
    balanced = kefer.load(path).meta["metrics"]
    assert "balanced (a = 1" in balanced["operating_point"]
    assert balanced["test_mean_accuracy"] != raw["test_mean_accuracy"]
    after = load_model(path)[0]
    assert all(torch_equal(before[k], after[k]) for k in before)
    assert run_cli("-m", "kefer", "export", str(path)).returncode != 0   # no DEST, no --evaluate


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_class_name_variants_add_the_adjective_anchor_sets():
    """--class-names variants doubles the text-augmentation pool: each template with the nouns, then
    with the adjectives ("This person is happy."); it is text augmentation, so it needs batch sampling."""
    from dataclasses import replace

    import torch
    from kefer.train.config import Config
    from kefer.train.losses import LossConfig
    from kefer.text import class_embeddings
    from kefer.train.fit import check_config, template_pool

    classes, templates = ["neutral", "happiness", "anger"], ["This person is [CLS].", "A photo of a [CLS] face."]
    cfg = Config(text_encoder="orthogonal", templates=templates, template_sampling="batch")
    loss_cfg = LossConfig(terms=("ce", "t", "sc"))
    assert template_pool(cfg, loss_cfg, classes).shape[0] == 2
    pool = template_pool(replace(cfg, class_names="variants"), loss_cfg, classes)
    assert pool.shape[:2] == (4, 3)
    torch.testing.assert_close(pool[0], class_embeddings("orthogonal", classes, templates[:1])[0])
    adjectives = ["neutral", "happy", "angry"]
    torch.testing.assert_close(pool[3], class_embeddings("orthogonal", adjectives, templates[1:])[0])
    assert template_pool(replace(cfg, templates=templates[:1], class_names="variants"), loss_cfg, classes).shape[0] == 2
    with pytest.raises(ValueError, match="more than once"):
        template_pool(replace(cfg, templates=templates[:1]), loss_cfg, classes)
    with pytest.raises(ValueError, match="no distinct adjective"):   # nothing to vary: refused, not duplicated
        template_pool(replace(cfg, class_names="variants"), loss_cfg, ["pain", "relief"])
    with pytest.raises(ValueError, match="template-sampling batch"):
        check_config(replace(cfg, template_sampling="mean", class_names="variants"))
    with pytest.raises(ValueError, match="one or the other"):
        check_config(replace(cfg, ce_adjust=1.0, balance="oversample"))
    from kefer.train.template_sets import HELD_OUT_TEMPLATES, TUNING_TEMPLATES

    with pytest.raises(ValueError, match="held-out or tuning templates"):
        check_config(replace(cfg, templates=[templates[0], HELD_OUT_TEMPLATES[3]]))
    with pytest.raises(ValueError, match="held-out or tuning templates"):
        check_config(replace(cfg, templates=[templates[0], TUNING_TEMPLATES[5]]))
    check_config(replace(cfg, class_names="variants"))


def test_template_flags_expand_named_sets_in_order_without_duplicates():
    import argparse

    from kefer.train.config import add_flags, flag_overrides
    from kefer.train.template_sets import HELD_OUT_TEMPLATES, WIDE_TEMPLATES
    from kefer.text import PAPER_TEMPLATES

    parser = argparse.ArgumentParser()
    add_flags(parser)

    def parse(*templates):
        return flag_overrides(parser.parse_args([f for t in templates for f in ("--template", t)]))["templates"]

    assert parse("paper") == PAPER_TEMPLATES and parse("wide") == WIDE_TEMPLATES
    assert WIDE_TEMPLATES[:9] == PAPER_TEMPLATES and len(WIDE_TEMPLATES) == 29
    assert parse("A face with [CLS].", "paper") == ["A face with [CLS].", *PAPER_TEMPLATES]
    assert parse("paper", "wide") == WIDE_TEMPLATES
    assert not set(WIDE_TEMPLATES) & set(HELD_OUT_TEMPLATES)


def test_an_oversampled_run_stores_the_uniform_prior_it_was_trained_under(tiny_folder, tmp_path):
    """Class-balanced sampling trains every class equally often, so the stored prior (which the
    post-hoc balance and --ce-adjust correct against) is uniform, not the folder's frequencies."""
    from kefer.checkpoint import read_meta

    skewed = tmp_path / "skewed"
    shutil.copytree(tiny_folder, skewed)
    for path in sorted((skewed / "train" / "surprise").iterdir())[4:]:   # 16, 16 and 4 training faces
        path.unlink()
    out = tmp_path / "over"
    r = run_cli("train.py", *tiny_run(skewed, out, 1), "--balance", "oversample")
    assert r.returncode == 0, r.stderr[-3000:]
    prior = read_meta(out / "best.safetensors")["operating"]["class_prior"]
    assert len(prior) > 1 and list(prior.values()) == pytest.approx([1 / len(prior)] * len(prior))


def test_worst_template_sampling_trains_against_the_anchor_set_with_the_highest_loss():
    """--template-sampling worst: given a pool [P, K, d], the step's loss is the batch's loss under
    the anchor set that fits it worst, not the mean or another set."""
    import torch
    from kefer.train.losses import LossConfig, total_loss
    from kefer.models.network import KEFERModel
    from kefer.models.factory import create_encoder
    from kefer.train.loop import train_step

    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    pool = torch.stack([text, text[[1, 2, 3, 0]], text.flip(0)])
    model = KEFERModel(create_encoder("resnet18", 64), 4, text).train()
    x, y = torch.randn(6, 3, 64, 64), torch.tensor([0, 1, 2, 3, 0, 1])
    loss_cfg = LossConfig(terms=("ce", "t", "sc"))
    with torch.no_grad():
        f = model(x)
        losses = [float(total_loss(loss_cfg, f, t, y, 0, transform=model.transform)[0]) for t in pool]
    assert sorted(losses)[-1] > sorted(losses)[-2] * 1.01   # one set is clearly the worst
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = train_step(model, x, y, optimizer, scaler, loss_cfg, 0, torch.device("cpu"), False, pool)[0]
    assert float(loss) == pytest.approx(max(losses), rel=1e-5)
