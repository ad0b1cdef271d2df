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
