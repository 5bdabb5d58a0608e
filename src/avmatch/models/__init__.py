"""Model registry: every model is a builder function registered by exact name.

A new model family is one module in this package plus one import line at the bottom of this file.
Every built model stores ``model.name`` and ``model.config`` (plain Python values) so a checkpoint
rebuilds its own model with :func:`build_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from avmatch.errors import AvmatchError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    summary: str
    timing: bool = False  # works on frame-rate sequences and estimates offsets


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, summary: str, timing: bool = False):
    """Decorator: ``@register_model("lstm", "one-line summary")`` over ``def builder(video_dim, audio_dim, **cfg)``."""

    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, summary, timing)
        return builder

    return wrap


def list_models() -> list[ModelEntry]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise AvmatchError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_model(name: str, video_dim: int, audio_dim: int, **config) -> nn.Module:
    """Build a registered model; the result carries ``.name`` and ``.config`` for checkpoints."""
    model = model_entry(name).builder(video_dim, audio_dim, **config)
    model.name = name
    model.config = {"video_dim": video_dim, "audio_dim": audio_dim, **config}
    return model


# Model families register themselves on import.
from avmatch.models import conv, dual, pair, recurrent, sync  # noqa: E402,F401
