"""Files and folders: the one atomic write, the cache and data folders, and the console log of
the command-line tools."""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it onto ``path``: a reader
    (or a run killed mid-write) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cache_dir() -> Path:
    """Where converted weights and text embeddings are cached: ``$KEFER_CACHE``, else ``~/.cache/kefer``."""
    return Path(os.environ.get("KEFER_CACHE") or Path.home() / ".cache" / "kefer")


def data_home() -> Path:
    """The folder holding the datasets: ``$KEFER_DATA``, else ``../shared/data`` next to the project."""
    return Path(os.environ.get("KEFER_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def log_to_console(show: bool = True) -> None:
    """Show kefer's INFO messages on stdout as ``[kefer] message`` (``show=False``: warnings only,
    e.g. on the non-main processes of a torchrun)."""
    logger = logging.getLogger("kefer")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[kefer] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if show else logging.WARNING)
