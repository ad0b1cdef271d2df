"""Option strings of the command lines: ``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (dataset options,
loss weights)."""
from __future__ import annotations

from typing import Any, Callable


def number_or_text(text: str) -> int | float | str:
    """'3' -> 3, '0.2' -> 0.2, anything else stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_kv(text: str, value: Callable[[str], Any] = number_or_text) -> dict:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'} (each value through ``value``); ValueError on an item
    that is not key=value."""
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not key=value.")
        out[key.strip()] = value(raw.strip())
    return out
