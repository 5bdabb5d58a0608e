"""Options given as text, KEY=VALUE: the command line's ``--option`` and ``compare``'s model entries."""

from __future__ import annotations

import json
from collections.abc import Iterable

from avmatch.errors import AvmatchError


def parse_options(pairs: Iterable[str], wants: str) -> dict:
    """``["hidden=64", "cell=gru"]`` -> ``{"hidden": 64, "cell": "gru"}``: a value is read as JSON where
    it is JSON, else kept as text; a pair without ``=`` is one line, ``wants`` and the pair."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise AvmatchError(f"{wants}, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
