"""The template sweep: faces embedded once, each template scored alone and averaged."""
import json
import shutil

import pytest

import kefer
from kefer.lab.templates import choose_wording, main, single_accuracies, sweep, wording_scores
from kefer.lab.wordings import encode_prompts
from kefer.viz import plot_sweep, plot_wordings
from kefer.text import DEFAULT_TEMPLATE, PAPER_TEMPLATES
from kefer.train.template_sets import HELD_OUT_TEMPLATES
from kefer.vocab import adjective
from kefer.train.evaluate import evaluate, split_features


@pytest.fixture(scope="module")
def small_val(ferplus_root, tmp_path_factory):
    """A folder dataset: 6 real FER+ validation faces of each of 3 classes."""
    from kefer.train.data import ferplus

    root = tmp_path_factory.mktemp("val")
    samples = ferplus.read_split(ferplus_root, "val")
    for k, name in enumerate(ferplus.CLASSES[:3]):
        (root / "val" / name).mkdir(parents=True)
        for path in [p for p, y in samples if y == k][:6]:
            shutil.copy(path, root / "val" / name / path.name)
    return root


def test_each_template_alone_matches_a_reprompted_evaluation(small_val, tmp_path):
    rec = kefer.load("fast", backend="torch")
    rows = sweep(rec, "folder", small_val, "val", wordings=("project", "raw", "transfer"))
    one_set = (PAPER_TEMPLATES + ["all 9 paper averaged"] + HELD_OUT_TEMPLATES
               + [f"all {len(HELD_OUT_TEMPLATES)} held-out averaged"])
    assert [r["template"] for r in rows] == one_set * 2
    assert [r["names"] for r in rows] == ["own"] * len(one_set) + ["adjectives"] * len(one_set)
    assert [r["template"] for r in rows if r["trained"]] == [DEFAULT_TEMPLATE] * 2   # fast knows one wording
    for template in (DEFAULT_TEMPLATE, HELD_OUT_TEMPLATES[0]):
        row = next(r for r in rows if r["template"] == template)
        assert row["wording"] == "project" and row["accuracy"] == row["by_wording"]["project"]["accuracy"]
        for wording in ("project", "raw", "transfer"):
            other = rec.with_prompts(encode_prompts(rec, template, wording=wording))
            expected = evaluate(other, "folder", small_val, split="val", logit_adjust=0)["val_accuracy"]
            assert row["by_wording"][wording]["accuracy"] == pytest.approx(expected)
    data, feats, labels, idx = split_features(rec, "folder", small_val, "val")
    adjectives = rec.encode_prompts(DEFAULT_TEMPLATE, [adjective(c) for c in rec.classes])
    assert adjectives.classes[:3] == ("neutral", "happy", "surprised")
    probs = rec.score(feats.numpy(), rec.operate(adjectives, balanced=False, abstain=False))[1]
    row = next(r for r in rows if r["template"] == DEFAULT_TEMPLATE and r["names"] == "adjectives")
    assert row["accuracy"] == pytest.approx((probs[:, idx.numpy()].argmax(1) == labels.numpy()).mean())
    plot_sweep(rows, "fast", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def row(template, accuracies, single=True, trained=False, names="own", set_="tuning"):
    """A sweep row with {method: accuracy}."""
    by_wording = {w: {"accuracy": a, "mean_accuracy": a} for w, a in accuracies.items()}
    first = next(iter(by_wording))
    return {"template": template, "set": set_, "names": names, "single": single, "trained": trained,
            "wording": first, **by_wording[first], "by_wording": by_wording}


def test_the_wording_rule_takes_the_best_method_that_loses_on_no_model():
    scores = {"a": {"transfer": 0.80, "raw": 0.79, "project": 0.83, "project+transfer": 0.90},
              "b": {"transfer": 0.50, "raw": 0.40, "project": 0.70, "project+transfer": 0.49}}
    assert choose_wording(scores) == "project"              # project+transfer is higher on average, lower on b
    scores["a"]["project"] = 0.79
    assert choose_wording(scores) == "transfer"             # project now loses on a: nothing is eligible but transfer
    close = {"a": {"transfer": 0.800, "project": 0.801}, "b": {"transfer": 0.5, "project": 0.502}}
    assert choose_wording(close) == "transfer"              # within the 0.2-point margin: the default stays
    assert choose_wording(close, "project") == "project"    # against another method
    rows = [row("x", {"transfer": 0.5, "project": 0.7}), row("y", {"transfer": 0.7, "project": 0.7}, names="adjectives"),
            row("all 2 tuning averaged", {"transfer": 0.0, "project": 0.0}, single=False),
            row("trained", {"transfer": 0.9, "project": 0.9}, trained=True)]
    assert wording_scores(rows) == pytest.approx({"transfer": 0.6, "project": 0.7})   # unseen single templates only
    assert single_accuracies(rows, "own") == {"transfer": [0.5, 0.9], "project": [0.7, 0.9]}


def test_choose_reads_one_validation_sweep_per_model_and_applies_the_rule(tmp_path, capsys):
    def sweep_file(name, model, split, accuracies):
        path = tmp_path / name
        path.write_text(json.dumps({"model": model, "dataset": "ferplus", "split": split,
                                    "rows": [row(f"t{i}", a) for i, a in enumerate(accuracies)]}))
        return str(path)

    a = sweep_file("a.json", "a", "val", [{"transfer": 0.8, "project": 0.84}, {"transfer": 0.7, "project": 0.7}])
    b = sweep_file("b.json", "b", "val", [{"transfer": 0.5, "project": 0.7}])
    assert main(["--choose", a, b, "--plot", str(tmp_path / "choice.png")]) == 0
    out = capsys.readouterr().out
    assert "a: transfer 75.00, project 77.00" in out and "chosen: project (against transfer" in out
    assert (tmp_path / "choice.png").stat().st_size > 10_000
    test = sweep_file("test.json", "c", "test", [{"transfer": 0.5, "project": 0.7}])
    assert main(["--choose", a, test]) == 2 and "chooses on validation" in capsys.readouterr().err
    assert main(["--choose", a, a]) == 2 and "a second sweep of a" in capsys.readouterr().err
    assert main(["--choose", a, b, "--against", "raw"]) == 2 and "--wordings raw" in capsys.readouterr().err


def test_the_sweep_plots_draw_every_set_model_and_method(tmp_path):
    rows = [row(f"t{i}", {"raw": 0.5 + i / 10, "project": 0.7}, set_=s) for i, s in enumerate(("paper", "wide", "tuning"))]
    plot_sweep(rows, "any sets", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    plot_wordings({"a": single_accuracies(rows), "b": single_accuracies(rows)}, "wordings", tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 10_000
