"""Shared fixtures: the real data in ../shared/data (tests that need it skip when it is absent).

The tests' conversions and ONNX exports go to a cache folder of their own (``KEFER_CACHE``, also
seen by the programs they start), never the user's ``~/.cache/kefer``.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kefer.io import data_home  # noqa: E402

DATA = data_home()
os.environ["KEFER_CACHE"] = tempfile.mkdtemp(prefix="kefer-test-cache-")
atexit.register(shutil.rmtree, os.environ["KEFER_CACHE"], ignore_errors=True)


def _need(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set KEFER_DATA or provide ../shared/data)")
    return path


@pytest.fixture(scope="session")
def ferplus_root() -> Path:
    return _need("ferplus")


@pytest.fixture(scope="session")
def ckplus_root() -> Path:
    return _need("ckplus")


PRIOR = {"neutral": 0.36, "happiness": 0.30, "surprise": 0.12, "sadness": 0.12, "anger": 0.08, "disgust": 0.006,
         "fear": 0.008, "contempt": 0.006}   # hand-made, FER+-like class frequencies for tests


def with_operating(dest: Path, strength: float | None, margin: float | None, source: str = "fast") -> Path:
    """A copy of shipped model ``source`` at ``dest`` storing a hand-made operating point (``PRIOR``,
    balance ``strength``, abstain ``margin``; None leaves each out)."""
    from kefer.backend import update_file_meta
    from kefer.recognizer import resolve_checkpoint

    try:
        src = resolve_checkpoint(source)
    except FileNotFoundError:
        pytest.skip(f"needs the shipped {source} model")
    dest = dest.with_suffix(src.suffix)
    shutil.copyfile(src, dest)
    operating = {"class_prior": PRIOR}
    if strength is not None:
        operating["balance"] = {"strength": strength, "rule": "test", "val": {}}
    if margin is not None:
        operating["abstain"] = {"margin": margin, "precision": 0.95, "rule": "test", "val": {}}
    update_file_meta(dest, {"operating": operating})   # replaces whatever point the source stores
    return dest


@pytest.fixture
def train_here(monkeypatch):
    """``kefer train`` in this process (``main(argv) -> exit code``), for short runs and refusals: the
    imports are paid once (CI time), and kefer's log is left to pytest's capture."""
    from kefer.cli import train as train_cli

    monkeypatch.setattr(train_cli, "log_to_console", lambda show=True: None)
    return train_cli.main
