"""The model that ships inside the package, so ``avmatch match`` works with no training pairs.

``weights/default.pt`` is a ``sync`` model on the ``default`` extractor, made by
``python benchmarks/generalise.py --build-default`` (never by hand); ``weights/default.json`` records
what it was trained on and which scene families were held out of its training.
"""

from __future__ import annotations

import json
from pathlib import Path

from avmatch.errors import AvmatchError

WEIGHTS = Path(__file__).parent / "weights"
NAMES = {"default": WEIGHTS / "default.pt"}


def model_path(name_or_path: str | Path) -> Path:
    """The checkpoint a ``--model`` / ``--init`` value names: a shipped model's name, else the path.

    A shipped model's name always means the shipped model, whatever the working folder holds (a
    planted ``default/best.pt`` must not stand in for it): a run folder of that name is ``./default``."""
    if isinstance(name_or_path, str) and name_or_path in NAMES:
        path = NAMES[name_or_path]
        if not path.is_file():
            raise AvmatchError("this installation has no shipped model; give --model RUN (a run folder "
                               "from `avmatch train`)", path)
        return path
    return Path(name_or_path)


def describe(name: str = "default") -> dict:
    """What the shipped model was trained on (its record), or {} when there is none."""
    record = NAMES[name].with_suffix(".json")
    return json.loads(record.read_text()) if record.is_file() else {}
