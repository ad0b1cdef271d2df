"""Fine-tuning a shipped model on your own folder (``kefer train --init MODEL``): what it takes from
the model, "epoch 0", never-worse selection, and the messages for folders it cannot use."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kefer.checkpoint import load_model
from kefer.recognizer import ASSETS

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kefer", "train", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture
def refused(capsys, train_here):
    """``refused(*args)``: ``kefer train`` in this process for a run it must refuse; checks the exit
    code is 2 and returns its stderr."""
    def call(*args) -> str:
        capsys.readouterr()
        assert train_here(list(args)) == 2
        return capsys.readouterr().err
    return call


def needs_fast():
    if not (ASSETS / "fast.safetensors").is_file():
        pytest.skip("needs assets/fast.safetensors")


@pytest.fixture(scope="module")
def own_folder(ckplus_root, tmp_path_factory) -> Path:
    """A user's folder of real CK+ faces, {train,val,test}/{neutral,happiness,surprise,sadness}/, split
    by subject (first 60% of each class's sorted subjects train, then 20% val, 20% test), one crop per
    subject and class (neutral has 575 crops of 123 subjects: keep the runs short)."""
    root = tmp_path_factory.mktemp("mine")
    for name in ("neutral", "happiness", "surprise", "sadness"):
        files = list({p.name.split("_")[0]: p for p in sorted((ckplus_root / name).iterdir(), reverse=True)}.values())
        subjects = sorted(p.name.split("_")[0] for p in files)
        cut = [int(len(subjects) * f) for f in (0.6, 0.8)]
        for path in files:
            i = subjects.index(path.name.split("_")[0])
            split = "train" if i < cut[0] else "val" if i < cut[1] else "test"
            (root / split / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / split / name / path.name)
    return root


@pytest.fixture(scope="module")
def finetuned(own_folder, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``kefer train --dataset folder --init fast`` with default flags (plots off)."""
    needs_fast()
    out = tmp_path_factory.mktemp("finetuned")
    r = run_cli("--dataset", "folder", "--data-root", str(own_folder), "--init", "fast", "--no-plots",
                "--output", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_a_fine_tune_inherits_the_model_and_is_never_worse_on_validation(finetuned):
    out, r = finetuned
    fast = load_model(ASSETS / "fast.safetensors")[1]
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["img_size"], cfg["encoder"], cfg["text_encoder"]) == (fast["img_size"], fast["encoder"], fast["text_encoder"])
    assert cfg["img_size"] != 224   # the default preset's size, which a run without --init trains at
    assert "--init fast: took" in r.stdout and "fine-tuning schedule" in r.stdout   # kefer logs to stdout
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["epoch"] == "0" and len(rows) == cfg["epochs"] + 1
    metrics = json.loads((out / "metrics.json").read_text())
    start = metrics["start"]
    assert float(rows[0]["val_mean_accuracy"]) == pytest.approx(start["val_mean_accuracy"], abs=1e-9)
    assert metrics["selected_on"] == "val_mean_accuracy"
    assert metrics["val_mean_accuracy"] >= start["val_mean_accuracy"]
    assert max(float(row["val_mean_accuracy"]) for row in rows) == pytest.approx(metrics["val_mean_accuracy"], abs=1e-9)
    assert {"test_accuracy", "test_mean_accuracy", "val_accuracy"} <= set(start)
    assert "the starting model: test accuracy" in r.stdout


def test_a_kept_starting_model_answers_as_the_model_did(finetuned):
    """When no epoch beats "epoch 0", best.safetensors holds the starting weights and operating point."""
    out, r = finetuned
    metrics = json.loads((out / "metrics.json").read_text())
    weights, meta = load_model(out / "best.safetensors")
    fast_weights, fast_meta = load_model(ASSETS / "fast.safetensors")
    same = all(torch.equal(weights[k], fast_weights[k]) for k in fast_weights if k != "text")
    assert same == (metrics["best_epoch"] == 0)
    if metrics["best_epoch"] == 0:
        assert meta["operating"] == fast_meta.get("operating", {}) and "no epoch beat the starting model" in r.stdout
    assert meta["classes"] == ["neutral", "happiness", "surprise", "sadness"]   # restricted to the folder's


def test_a_flag_that_contradicts_the_model_is_refused_or_warned(own_folder, tmp_path, refused):
    needs_fast()
    err = refused("--dataset", "folder", "--data-root", str(own_folder), "--init", "fast", "--encoder",
                  "resnet34", "--output", str(tmp_path / "a"))
    assert "do not load into 'resnet34'" in err and "Leave --encoder out" in err
    r = run_cli("--dataset", "folder", "--data-root", str(own_folder), "--init", "fast", "--img-size", "48",
                "--epochs", "1", "--no-plots", "--no-test", "--output", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained with img_size 64; this run uses 48, as asked" in r.stdout
    assert json.loads((tmp_path / "b" / "config.json").read_text())["img_size"] == 48
    assert "test_accuracy" not in json.loads((tmp_path / "b" / "metrics.json").read_text())


def test_folders_the_method_cannot_use_say_what_to_do(own_folder, tmp_path, refused):
    no_neutral = tmp_path / "no-neutral"
    shutil.copytree(own_folder, no_neutral)
    for split in ("train", "val", "test"):
        shutil.rmtree(no_neutral / split / "neutral")
    err = refused("--dataset", "folder", "--data-root", str(no_neutral), "--preset", "cpu", "--epochs", "1",
                  "--output", str(tmp_path / "a"))
    assert "need a 'neutral' class" in err and "--losses ce" in err
    flat = tmp_path / "flat"
    for name, n in (("neutral", 5), ("happiness", 2)):
        (flat / name).mkdir(parents=True)
        for path in sorted((own_folder / "train" / name).iterdir())[:n]:
            shutil.copy(path, flat / name / path.name)
    err = refused("--dataset", "folder", "--data-root", str(flat), "--preset", "cpu", "--output", str(tmp_path / "b"))
    assert "folder:val=0.1,test=0.2" in err
    err = refused("--dataset", "folder:val=0.1,test=0.2", "--data-root", str(flat), "--preset", "cpu",
                  "--output", str(tmp_path / "c"))
    assert "too small to split" in err and "{'happiness': 2}" in err and "at least 3" in err


def test_a_flat_folder_splits_per_class_without_overlap(own_folder):
    from kefer.train.data import read

    flat = own_folder / "train"
    parts = {s: read("folder:val=0.2,test=0.2,seed=1", flat, s)[0] for s in ("train", "val", "test")}
    paths = {s: {p for p, _ in v} for s, v in parts.items()}
    assert not (paths["train"] & paths["val"] or paths["train"] & paths["test"] or paths["val"] & paths["test"])
    assert sum(map(len, paths.values())) == sum(1 for _ in flat.glob("*/*"))
    for s in ("val", "test"):
        assert {label for _, label in parts[s]} == {0, 1, 2, 3}   # every class in every split
