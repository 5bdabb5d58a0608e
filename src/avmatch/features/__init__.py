"""Features: media file -> (T, D) float32 feature sequences, one per modality, extracted once.

This module is the extractor registry; beside it, one module per extractor (``classic``, ``frames``,
``pretrained``; ``spectral`` holds the log-mel they share), the batch job that extracts media into a
corpus (``job``), the features of media given to a command, cached (``cache``), and the typed record
of how features were made (``record``), which corpora, checkpoints and the cache keep.

Each extractor is a class registered by name::

    @register_extractor("mine")
    class Mine(Extractor):
        version = 1
        def __init__(self, fps: float = 25.0): ...

A new extractor is one module plus one import line at the bottom of this file. Options are the
keyword arguments of ``__init__``; :func:`get_extractor` checks their names and converts strings
(from ``--option key=value``) to the type of the default.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avmatch.errors import AvmatchError
from avmatch.features.record import ExtractorRecord


class Extractor:
    """Base class. Subclasses set ``version`` (bump it when the features change, so cached features
    are re-extracted), the rates and the dimensions, and implement :meth:`video` and :meth:`audio`."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    video_rate_hz: float = 1.0
    audio_rate_hz: float = 1.0
    video_dim: int = 0
    audio_dim: int = 0
    # where the visual features hold maps of cells: (first column, number of maps, cells per side), so
    # a model can read them as images (models registered with reads_maps); None: no maps
    video_maps: ClassVar[tuple[int, int, int] | None] = None
    # the training recipe (avmatch.training.RECIPES) that suits these features when the user names no
    # model; "": the model that suits the corpus's rates
    recipe: ClassVar[str] = ""

    def video(self, path: str | Path) -> np.ndarray:
        """Visual features of a media file, (T, video_dim) float32 at ``video_rate_hz``."""
        raise NotImplementedError

    def audio(self, path: str | Path) -> np.ndarray:
        """Audio features of a media file, (T, audio_dim) float32 at ``audio_rate_hz``."""
        raise NotImplementedError

    def augment_audio(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The audio features ``x`` (T, audio_dim) of one clip as another recording of the same sound
        might give them (codec, level, microphone, noise), for training; an extractor that cannot
        say returns them unchanged."""
        return x

    def params(self) -> dict[str, Any]:
        """The options this extractor was built with (plain values), enough to rebuild it."""
        return {}

    def record(self) -> ExtractorRecord:
        """Name, version, options, rates and dims: what a corpus and a checkpoint record."""
        return ExtractorRecord(name=self.name, version=self.version, params=self.params(),
                               video_rate_hz=self.video_rate_hz, audio_rate_hz=self.audio_rate_hz,
                               video_dim=self.video_dim, audio_dim=self.audio_dim)


_REGISTRY: dict[str, type[Extractor]] = {}


def register_extractor(name: str):
    """Class decorator: make an :class:`Extractor` subclass available under ``name``."""

    def wrap(cls: type[Extractor]) -> type[Extractor]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"extractor {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_extractors() -> list[type[Extractor]]:
    """The registered extractor classes, by name."""
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def extractor_options(name: str) -> dict[str, Any]:
    """The options of an extractor and their defaults."""
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in list(sig.parameters.values())[1:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def get_extractor(name: str, **options: Any) -> Extractor:
    """Build the extractor registered as ``name`` with the given options."""
    cls = _lookup(name)
    known = extractor_options(name)
    for key, value in list(options.items()):
        if key not in known:
            raise AvmatchError(f"extractor {name!r} has no option {key!r}; options: "
                               + (", ".join(f"{k}={v!r}" for k, v in known.items()) or "none"))
        options[key] = _coerce(name, key, value, known[key])
    try:
        return cls(**options)
    except ValueError as err:  # an option out of its bounds (each extractor checks its own)
        raise AvmatchError(f"extractor {name!r}: {err}") from None


def _lookup(name: str) -> type[Extractor]:
    if name not in _REGISTRY:
        raise AvmatchError(f"unknown extractor {name!r}; choose from: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    if default is None or default is inspect.Parameter.empty or isinstance(value, type(default)):
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
                return value.lower() in ("1", "true", "yes")
            raise ValueError
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return type(default)(value)
    except (TypeError, ValueError):
        raise AvmatchError(f"extractor {name!r}: option {key}={value!r} should be a "
                           f"{type(default).__name__}") from None


# Registration happens on import: one line per extractor module.
from avmatch.features import classic, frames, pretrained  # noqa: E402,F401
