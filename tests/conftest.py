"""Shared fixtures: small media files generated once per test session (see ``mediagen.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so tests can `import mediagen` under any import mode

from mediagen import make_audio, make_clip  # noqa: E402


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
