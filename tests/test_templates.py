"""The template sweep: faces embedded once, each template scored alone and averaged."""
import shutil

import pytest

import kefer
from kefer.templates import sweep
from kefer.viz import plot_sweep
from kefer.text import DEFAULT_TEMPLATE, HELD_OUT_TEMPLATES, PAPER_TEMPLATES
from kefer.data.vocab import adjective
from kefer.train.evaluate import evaluate, split_features


@pytest.fixture(scope="module")
def small_val(ferplus_root, tmp_path_factory):
    """A folder dataset: 6 real FER+ validation faces of each of 3 classes."""
    from kefer.data import ferplus

    root = tmp_path_factory.mktemp("val")
    samples = ferplus.read_split(ferplus_root, "val")
    for k, name in enumerate(ferplus.CLASSES[:3]):
        (root / "val" / name).mkdir(parents=True)
        for path in [p for p, y in samples if y == k][:6]:
            shutil.copy(path, root / "val" / name / path.name)
    return root


def test_each_template_alone_matches_a_reprompted_evaluation(small_val, tmp_path):
    rec = kefer.load("fast", backend="torch")
    rows = sweep(rec, "folder", small_val, "val")
    one_set = (PAPER_TEMPLATES + ["all 9 paper averaged"] + HELD_OUT_TEMPLATES
               + [f"all {len(HELD_OUT_TEMPLATES)} held-out averaged"])
    assert [r["template"] for r in rows] == one_set * 2
    assert [r["names"] for r in rows] == ["own"] * len(one_set) + ["adjectives"] * len(one_set)
    assert [r["template"] for r in rows if r["trained"]] == [DEFAULT_TEMPLATE] * 2   # fast knows one wording
    for template in (DEFAULT_TEMPLATE, HELD_OUT_TEMPLATES[0]):
        for transfer, key in ((True, "accuracy"), (False, "untransferred_accuracy")):
            rec.prompts = rec.encode_prompts(template, transfer=transfer)
            expected = evaluate(rec, "folder", small_val, split="val", logit_adjust=0)["val_accuracy"]
            assert next(r for r in rows if r["template"] == template)[key] == pytest.approx(expected)
    rec.reset_prompts()
    data, feats, labels, idx = split_features(rec, "folder", small_val, "val")
    adjectives = rec.encode_prompts(DEFAULT_TEMPLATE, [adjective(c) for c in rec.classes])
    assert adjectives.classes[:3] == ("neutral", "happy", "surprised")
    probs = rec.score(feats.numpy(), rec.operate(adjectives, balanced=False, abstain=False))[1]
    row = next(r for r in rows if r["template"] == DEFAULT_TEMPLATE and r["names"] == "adjectives")
    assert row["accuracy"] == pytest.approx((probs[:, idx.numpy()].argmax(1) == labels.numpy()).mean())
    plot_sweep(rows, "fast", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
