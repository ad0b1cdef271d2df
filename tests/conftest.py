"""Shared fixtures: the real data in ../shared/data (tests that need it skip when it is absent)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kefer.io import data_home  # noqa: E402

DATA = data_home()


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
