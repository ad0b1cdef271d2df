"""Datasets: FER+ majority protocol against the published counts, folders, bad images."""
import numpy as np
import pytest
from PIL import Image

from kefer.train.data import build_dataset, read_folder
from kefer.train.data.ferplus import majority_label, read_split, vote_distribution
from kefer.vocab import adjective, adjectives, canonical


def test_majority_label_rules():
    # neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
    assert majority_label([6, 0, 1, 1, 0, 0, 0, 0, 2, 0]) == 0
    assert majority_label([5, 0, 0, 1, 3, 1, 0, 0, 0, 0]) == 0      # 1-votes dropped: 5 > 8/2 (not 5 > 10/2)
    assert majority_label([4, 4, 0, 0, 0, 0, 0, 0, 2, 0]) is None   # no class over half
    assert majority_label([0, 2, 0, 0, 0, 0, 0, 0, 8, 0]) is None   # unknown wins
    assert majority_label([0, 0, 0, 0, 0, 0, 0, 0, 0, 10]) is None  # not a face


def test_vote_distribution_drops_noise_and_non_classes():
    # neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
    assert vote_distribution([0, 6, 0, 1, 0, 3, 0, 0, 0, 0]) == pytest.approx([0, 2 / 3, 0, 0, 0, 1 / 3, 0, 0])
    assert vote_distribution([5, 0, 0, 1, 3, 1, 0, 0, 0, 0]) == pytest.approx([5 / 8, 0, 0, 0, 3 / 8, 0, 0, 0])
    assert vote_distribution([0, 0, 0, 0, 0, 0, 0, 0, 2, 8]) == [0.0] * 8


def test_ferplus_vote_targets_agree_with_the_majority_labels(ferplus_root):
    ds = build_dataset("ferplus", ferplus_root, "train", max_samples=300, labels="votes")
    q = ds.soft_targets
    assert q.shape == (300, 8) and np.allclose(q.sum(1), 1) and (q.argmax(1).tolist() == ds.targets)
    assert (q.max(1).values < 1).any()                      # some images are not unanimous
    img, target = ds[0]
    assert target.shape == (8,) and int(target.argmax()) == ds.targets[0]
    seven = build_dataset("ferplus", ferplus_root, "train", max_samples=300, labels="votes",
                          classes=["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"])
    assert seven.soft_targets.shape[1] == 7 and seven.soft_targets.argmax(1).tolist() == seven.targets
    assert build_dataset("ferplus", ferplus_root, "val", max_samples=5).soft_targets is None


def test_vote_labels_need_ferplus(ckplus_root):
    with pytest.raises(ValueError, match="annotator votes"):
        build_dataset("ckplus", ckplus_root, "test", labels="votes")
    with pytest.raises(ValueError, match="majority' or 'votes"):
        build_dataset("ckplus", ckplus_root, "test", labels="soft")


def test_ferplus_majority_counts_match_the_published_ones(ferplus_root):
    counts = {s: len(read_split(ferplus_root, s)) for s in ("train", "val", "test")}
    assert counts == {"train": 25045, "val": 3191, "test": 3137}


def test_ferplus_images_become_rgb(ferplus_root):
    ds = build_dataset("ferplus", ferplus_root, "val", max_samples=5)
    img, label = ds[0]
    assert img.mode == "RGB" and img.size == (48, 48) and 0 <= label < 8
    assert len(ds) == 5 and ds.classes[0] == "neutral"


def test_ckplus_defaults_to_seven_classes_without_contempt(ckplus_root):
    ds = build_dataset("ckplus", ckplus_root, "test")
    assert ds.classes == ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]
    assert len(ds) == 890 - 17 and max(ds.targets) == 6


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-root"):
        build_dataset("ferplus", tmp_path / "nope", "train")
    with pytest.raises(FileNotFoundError, match="label.csv"):
        build_dataset("ferplus", tmp_path, "train")


def test_unknown_dataset_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset"):
        build_dataset("raf", tmp_path, "train")


def test_folder_maps_synonyms_and_skips_corrupt_images(tmp_path):
    for name in ("Happy", "sad", "neutral"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((20, 20), 128, np.uint8)).save(tmp_path / name / "a.png")  # greyscale
    (tmp_path / "sad" / "broken.png").write_bytes(b"not a png at all")
    samples, classes = read_folder(tmp_path)
    assert classes == ["neutral", "happiness", "sadness"]
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = build_dataset("folder", tmp_path, "test")
    assert len(ds) == 3 and len(ds.skipped) == 1
    assert ds[0][0].mode == "RGB"


def test_folder_without_splits_cannot_train(tmp_path):
    (tmp_path / "neutral").mkdir()
    with pytest.raises(FileNotFoundError, match="train"):
        build_dataset("folder", tmp_path, "train")


def test_vocabulary():
    assert canonical("Happy") == "happiness" and canonical("ANGRY") == "anger" and canonical("fear") == "fear"
    assert canonical("joy") == "happiness" and canonical("contemptuous") == "contempt"
    assert adjective("Happiness") == "happy" and adjective("sad") == "sad" and adjective("neutral") == "neutral"
    assert adjective("pain") == "pain"   # not an expression kefer knows: unchanged
    assert adjectives(["neutral", "anger"]) == ["neutral", "angry"]
    assert adjectives(["pain", "relief"]) is None and adjectives(["happy", "happiness"]) is None


def test_option_strings_parse_numbers_and_text_and_refuse_other_items():
    from kefer.options import parse_kv

    assert parse_kv("val=0.2,seed=1,images=original") == {"val": 0.2, "seed": 1, "images": "original"}
    assert parse_kv("") == {}
    with pytest.raises(ValueError, match="not key=value"):
        parse_kv("val=0.2,oops")


def test_augmentation_options_keep_the_output_shape_and_change_the_pipeline():
    import torch
    from torchvision.transforms import v2 as T
    from kefer.preprocess import IMAGENET_MEAN, IMAGENET_STD
    from kefer.train.augment import train_transform
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    recipe = T.Compose([   # the paper's augmentation, as kefer has always trained with it
        T.ToImage(), T.Resize((64, 64), antialias=True), T.RandomHorizontalFlip(), T.RandomRotation(10.0),
        T.RandomApply([T.RandomCrop(64, padding=4)], p=0.5), T.ToDtype(torch.float32, scale=True),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD), T.RandomErasing(scale=(0.02, 0.25))])
    assert repr(train_transform(64)) == repr(recipe)

    def kinds(t):   # the transforms of a pipeline, those inside RandomApply included
        return {type(s) for s in t.transforms} | {type(s) for r in t.transforms if isinstance(r, T.RandomApply)
                                                  for s in r.transforms}
    for options, kind in [({"crop_area": 0.6}, T.RandomResizedCrop), ({"auto_augment": "trivial"}, T.TrivialAugmentWide),
                          ({"auto_augment": "randaugment"}, T.RandAugment), ({"blur": 0.5}, T.GaussianBlur)]:
        t = train_transform(64, **options)
        assert kind in kinds(t) and kind not in kinds(train_transform(64)), options
        assert t(img).shape == (3, 64, 64)
    assert T.RandomCrop not in kinds(train_transform(64, crop_area=0.6))
    assert T.RandomErasing not in kinds(train_transform(64, erasing=0))
    for options, match in [({"crop_area": 1.5}, "crop_area"), ({"auto_augment": "autoaugment"}, "auto_augment"),
                           ({"blur": -0.1}, "blur"), ({"erasing": 2}, "erasing")]:
        with pytest.raises(ValueError, match=match):
            train_transform(64, **options)


def test_augmentation_flags_reach_the_config():
    import argparse
    from kefer.train.config import Config, add_flags, flag_overrides
    parser = argparse.ArgumentParser()
    add_flags(parser)
    args = parser.parse_args(["--crop-area", "0.6", "--auto-augment", "trivial", "--blur", "0.5", "--erasing", "0"])
    cfg = Config(**flag_overrides(args))
    assert (cfg.crop_area, cfg.auto_augment, cfg.blur, cfg.erasing, cfg.rotation) == (0.6, "trivial", 0.5, 0.0, 10.0)
