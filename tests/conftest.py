"""Shared fixtures: small media files generated once per test session (see ``avmatch.testing.mediagen``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch  # noqa: E402

from avmatch.testing.mediagen import make_audio, make_clip  # noqa: E402

# The models under test are small: one thread avoids OpenMP overhead and, on a shared 2-core
# machine, threads spinning against each other (measured here: 3 s with one thread, 11 s with two).
torch.set_num_threads(1)

# The scene generators take real recordings from ~/.cache/avmatch/recordings where someone fetched them
# (benchmarks/fetch_recordings.py): tests make their own (tests/demo/test_recordings.py), so what a
# machine has cached never changes what the tests generate. Subprocesses inherit this.
os.environ["AVMATCH_RECORDINGS"] = tempfile.mkdtemp(prefix="avmatch-test-recordings-")
os.environ.pop("AVMATCH_RECORDING_SOURCES", None)


class MediaFiles:
    """Makes each named test file on first use and hands back its path afterwards."""

    def __init__(self, root: Path):
        self.root = root
        self._made: dict[str, Path] = {}

    def clip(self, name: str, **kwargs) -> Path:
        """A clip (see :func:`mediagen.make_clip`) with the session's default event times."""
        if name not in self._made:
            self._made[name] = make_clip(self.root / name, **kwargs)
        return self._made[name]

    def audio(self, name: str, **kwargs) -> Path:
        """An audio-only file (see :func:`mediagen.make_audio`)."""
        if name not in self._made:
            self._made[name] = make_audio(self.root / name, **kwargs)
        return self._made[name]


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> MediaFiles:
    return MediaFiles(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def clip_mp4(media) -> Path:
    """2 s, 64x48, 25 fps H.264 + stereo 44.1 kHz AAC; flash and tone burst at mediagen.EVENTS."""
    return media.clip("clip.mp4")


@pytest.fixture
def killed_on_call(monkeypatch):
    """``killed_on_call(owner, name, n)``: ``owner.name`` replaced by a function that passes each call to
    the real one but raises KeyboardInterrupt (a kill) on the ``n``-th; returns the list its calls are
    counted in. ``monkeypatch.undo()`` puts the real one back."""

    def patch(owner, name: str, n: int) -> list:
        real, calls = getattr(owner, name), []

        def dies_on_nth_call(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, dies_on_nth_call)
        return calls

    return patch
