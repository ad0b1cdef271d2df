"""Seeded splits for datasets that ship without one: a stratified hold-out and subject folds.

Both depend only on the samples and their own ``seed`` (never on the training seed), so the
train, validation and test sets of one protocol never overlap, whatever run builds them.
"""
from __future__ import annotations

import numpy as np


def stratified_holdout(labels: list[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (kept, held_out): ``fraction`` of each class held out, rounded, at least one per class
    that has two or more samples."""
    if not 0 < fraction < 1:
        raise ValueError(f"The validation fraction must be between 0 and 1, not {fraction}.")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    held = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        held.extend(members[:n].tolist())
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def parse_fold(spec: str) -> tuple[int, int]:
    """'3/10' -> (3, 10): fold 3 of 10, counted from 1."""
    k, _, n = str(spec).partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n) and int(n) >= 3):
        raise ValueError(f"A fold is 'k/n' with 1 <= k <= n and n >= 3 (e.g. 'fold=1/10'), not {spec!r}.")
    return int(k), int(n)


def subject_folds(subjects: list[str], k: int, n: int, seed: int = 0) -> dict[str, str]:
    """Each subject's split for fold ``k`` of ``n``: the subjects are shuffled (seeded) and dealt
    into n groups; group k is 'test', group k+1 (cyclically) is 'val', the rest is 'train'."""
    order = np.random.default_rng(seed).permutation(sorted(set(subjects)))
    group = {s: i % n + 1 for i, s in enumerate(order)}
    val = k % n + 1
    return {s: "test" if g == k else "val" if g == val else "train" for s, g in group.items()}


def subject_holdout(subjects: list[str], val: float, test: float, seed: int = 0) -> dict[str, str]:
    """Each subject's split: the subjects are shuffled (seeded); the first ``test`` fraction of them
    is 'test', the next ``val`` fraction 'val' (each rounded, at least one), the rest 'train'."""
    order = np.random.default_rng(seed).permutation(sorted(set(subjects)))
    n_test, n_val = max(1, round(test * len(order))), max(1, round(val * len(order)))
    return {s: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, s in enumerate(order)}
