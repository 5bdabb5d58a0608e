"""Model registry: every model is a builder function registered by exact name, with what it can do.

A new model family is one module in this package plus one import line at the bottom of this file.
Every built model stores ``model.name`` and ``model.config`` (plain Python values) so a checkpoint
rebuilds its own model with :func:`build_model`.

What a model can do is declared here once, by its ``kind``, and read with :func:`capabilities`:
- "embedding": clip embeddings (B, E), L2-normalised; the score is ``scale * cosine + bias``, so
  the retrieval score of a FAISS search is the model's own score.
- "pair": a score for a (video, audio) pair from the model's own head (``score_pairs``); any clip
  embedding it has only retrieves candidates (compared by ``metric``).
- "timing": per-frame embeddings scored at every lag (``lag_curve``, ``lag_matrix``, ``max_lag``):
  it also estimates each pair's offset.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from avmatch.errors import AvmatchError

KINDS = ("embedding", "pair", "timing")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    summary: str
    kind: str  # one of KINDS: what the model can do (see the module's docstring)
    metric: str = "ip"  # how its clip embeddings compare: "ip" (cosine) or "l2" (minus the distance is the score)
    reads_maps: bool = False  # takes option ``video_maps``: training passes the extractor's map layout

    @property
    def embedding(self) -> bool:
        return self.kind == "embedding"

    @property
    def pair(self) -> bool:
        return self.kind == "pair"

    @property
    def timing(self) -> bool:
        """Works on frame-rate sequences, has a lag range and estimates offsets."""
        return self.kind == "timing"


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, summary: str, kind: str, metric: str = "ip", reads_maps: bool = False):
    """Decorator: ``@register_model("lstm", "one-line summary", kind="embedding")`` over
    ``def builder(video_dim, audio_dim, **cfg)``; ``kind`` is one of :data:`KINDS`; ``reads_maps``:
    the model takes option ``video_maps``, which training fills from the extractor (Extractor.video_maps)."""
    if kind not in KINDS or metric not in ("ip", "l2"):
        raise ValueError(f"model {name!r}: kind must be one of {KINDS} and metric ip or l2")

    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, builder, summary, kind, metric, reads_maps)
        return builder

    return wrap


def list_models() -> list[ModelEntry]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise AvmatchError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def capabilities(model: nn.Module) -> ModelEntry:
    """What a built model can do: its registry entry (kind, metric), found by ``model.name``."""
    return model_entry(model.name)


def full_config(entry: ModelEntry, model: nn.Module, config: dict) -> dict:
    """Every option the model was built with, defaults included: the class's defaults, then the
    builder's own (``def lstm_tw(video_dim, audio_dim, pool="attention", **cfg)``), then ``config``.
    A checkpoint records all of them, so a default changed in a later version cannot change it."""
    values: dict = {}
    for fn in (type(model), entry.builder):
        for p in inspect.signature(fn).parameters.values():
            if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                values[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return {**values, **config}


def build_model(name: str, video_dim: int, audio_dim: int, **config) -> nn.Module:
    """Build a registered model; the result carries ``.name`` and ``.config`` (every option, defaults
    included) for checkpoints."""
    entry = model_entry(name)
    try:
        model = entry.builder(video_dim, audio_dim, **config)
    except ValueError as err:  # an option out of its bounds (each model checks its own)
        raise AvmatchError(f"model {name!r}: {err}") from None
    except (RuntimeError, TypeError) as err:  # what torch or the builder says of an option no model checks
        given = ", ".join(f"{k}={v!r}" for k, v in config.items()) or "its defaults"
        raise AvmatchError(f"model {name!r} cannot be built with {given}: {str(err).splitlines()[0][:200]}") from None
    model.name = name
    model.config = {"video_dim": video_dim, "audio_dim": audio_dim, **full_config(entry, model, config)}
    return model


# Model families register themselves on import.
from avmatch.models import conv, dual, pair, recurrent, sync  # noqa: E402,F401
