"""The experiments report: tables from raw run records."""

from kefer.lab.experiments import EXPERIMENTS
from kefer.lab.report import between_markers, per_class_table


def record(row: str, seed: int, anger: float) -> dict:
    per_class = {"neutral": 0.9, "anger": anger}
    return {"row": row, "seed": seed, "ckplus": {"classes": ["neutral", "anger"], "per_class_accuracy": per_class}}


def test_per_class_table_averages_seeds_and_skips_rows_not_run():
    rows = EXPERIMENTS["augment"][1]
    by_row = {rows[0]: [record(rows[0], 0, 0.10), record(rows[0], 1, 0.30)], rows[1]: [record(rows[1], 0, 0.5)]}
    lines = per_class_table("augment", "small", by_row).splitlines()
    assert lines[2] == "| row | seeds | neutral | anger |"
    assert lines[4] == f"| {rows[0]} | 2 | 90.00 ± 0.00 | 20.00 ± 14.14 |"
    assert lines[5] == f"| {rows[1]} | 1 | 90.00 | 50.00 |" and len(lines) == 6
    assert "no finished run" in per_class_table("augment", "small", {})


def test_per_class_table_leaves_a_class_a_row_lacks_blank():
    rows = EXPERIMENTS["augment"][1]
    other = {"row": rows[1], "seed": 0, "ckplus": {"classes": ["neutral", "fear"],
                                                   "per_class_accuracy": {"neutral": 0.5, "fear": 0.25}}}
    lines = per_class_table("augment", "small", {rows[0]: [record(rows[0], 0, 0.1)], rows[1]: [other]}).splitlines()
    assert lines[2] == "| row | seeds | neutral | anger | fear |"
    assert lines[4:] == [f"| {rows[0]} | 1 | 90.00 | 10.00 |  |", f"| {rows[1]} | 1 | 50.00 |  | 25.00 |"]


def test_between_markers_replaces_only_the_marked_text():
    text = "a\n<!-- table:x -->\nold\n<!-- /table:x -->\nb"
    assert between_markers(text, "x", "new") == "a\n<!-- table:x -->\nnew\n<!-- /table:x -->\nb"
    assert between_markers(text, "y", "new") == text
