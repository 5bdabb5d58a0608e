"""Real recordings for the scene generators: stored sources, leave-source-out, the voices families."""

from __future__ import annotations

import numpy as np
import pytest

from avmatch.demo import recordings, scenes, worlds

SR = recordings.SAMPLE_RATE


def _store(folder, name: str, freq_hz: float, n: int = 6) -> None:
    """A fake source: ``n`` utterances of 0.4-1.2 s, each a tone at ``freq_hz`` with a syllable rhythm."""
    rng = np.random.default_rng(int(freq_hz))
    pieces = []
    for _ in range(n):
        t = np.arange(int(rng.uniform(0.4, 1.2) * SR)) / SR
        pieces.append(np.sin(2 * np.pi * freq_hz * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2)
    audio = np.concatenate(pieces)
    np.savez(folder / f"{name}.npz", audio=np.round(audio * 32767 * 0.8).astype(np.int16),
             starts=np.cumsum([0] + [len(p) for p in pieces]))


@pytest.fixture
def stored(tmp_path, monkeypatch):
    _store(tmp_path, "asterisk-en", 300.0)
    _store(tmp_path, "asterisk-ru", 2000.0)
    monkeypatch.setenv("AVMATCH_RECORDINGS", str(tmp_path))
    monkeypatch.delenv("AVMATCH_RECORDING_SOURCES", raising=False)
    return tmp_path


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


def test_stored_sources_and_utterances(stored, monkeypatch):
    assert recordings.available_sources("speech") == ["asterisk-en", "asterisk-ru"]
    assert recordings.available_sources("music") == []  # a kind no source has
    rng = np.random.default_rng(0)
    said = [recordings.utterance(rng, "speech", max_s=0.5) for _ in range(20)]
    assert all(x.dtype == np.float32 and len(x) <= 0.5 * SR and abs(np.abs(x).max() - 1) < 1e-6 for x in said)
    assert {round(_peak_hz(x, SR), -2) for x in said} == {300.0, 2000.0}  # both sources drawn
    monkeypatch.setenv("AVMATCH_RECORDING_SOURCES", "asterisk-ru")  # leave asterisk-en out
    assert recordings.available_sources("speech") == ["asterisk-ru"]
    assert {round(_peak_hz(recordings.utterance(rng), SR), -2) for _ in range(10)} == {2000.0}


@pytest.mark.parametrize("generator, family", [(scenes, "voices"), (worlds, "talk")])
def test_real_voices_speak_only_the_allowed_sources(stored, monkeypatch, generator, family):
    assert family in generator.available_families()
    for source, freq in (("asterisk-en", 300.0), ("asterisk-ru", 2000.0)):
        monkeypatch.setenv("AVMATCH_RECORDING_SOURCES", source)
        scene = generator.make_scene([3, 1], family=family, size=(64, 64))
        again = generator.make_scene([3, 1], family=family, size=(64, 64))
        assert np.array_equal(scene.audio, again.audio) and np.array_equal(scene.frames, again.frames)
        assert scene.events_s
        # the voice dominates the track: its tone is the spectrum's peak
        assert abs(_peak_hz(scene.audio, scene.sample_rate) - freq) < 0.05 * freq


@pytest.mark.parametrize("generator, family", [(scenes, "voices"), (worlds, "talk")])
def test_real_voices_need_recordings(tmp_path, monkeypatch, generator, family):
    monkeypatch.setenv("AVMATCH_RECORDINGS", str(tmp_path))  # nothing stored
    assert family not in generator.available_families()
    with pytest.raises(RuntimeError, match="fetch_recordings"):
        generator.make_scene([0, 0], family=family)


def test_fetch_refuses_unknown_and_reserved_sources(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown recording sources"):
        recordings.fetch(tmp_path, ["klettres"])
    monkeypatch.setitem(recordings.SOURCES, "letters", ("klettres-data", "usr/share/**/*.ogg", "speech"))
    with pytest.raises(ValueError, match="reserved for independent evaluation"):
        recordings.fetch(tmp_path, ["letters"], progress=False)
