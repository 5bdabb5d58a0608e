"""Feature extractors: the registry, shapes and rates, event timing, determinism, speed (printed)."""

from __future__ import annotations

import json
import time

import av
import numpy as np
import pytest

from avmatch.errors import AvmatchError
from avmatch.features import Extractor, get_extractor, list_extractors, register_extractor
from avmatch.features.spectral import LogMel, mel_filterbank
from avmatch.media import read_audio
from avmatch.testing.mediagen import EVENTS

EVENT_ROWS = [round(e * 25) for e in EVENTS]  # 12 and 32 at 25 rows a second


def peaks(x: np.ndarray, n: int) -> list[int]:
    return sorted(int(i) for i in np.argsort(x)[-n:])


def test_registry_lists_and_builds():
    names = [e.name for e in list_extractors()]
    assert {"default", "classic"} <= set(names)
    for cls in list_extractors():
        try:
            extractor = get_extractor(cls.name)
        except AvmatchError as err:  # needs an optional package or a weights file the user names
            assert "pip install" in str(err) or "weights=PATH" in str(err), err
            continue
        assert isinstance(extractor, Extractor) and extractor.name == cls.name
        assert isinstance(extractor.version, int)
        json.dumps(extractor.record().to_dict())  # plain values, fit for a manifest
        assert get_extractor(cls.name, **extractor.params()).params() == extractor.params()


def test_registry_errors_and_option_strings():
    with pytest.raises(AvmatchError, match="unknown extractor 'nope'"):
        get_extractor("nope")
    with pytest.raises(AvmatchError, match="no option 'colour'"):
        get_extractor("default", colour=True)
    with pytest.raises(AvmatchError, match="should be a float"):
        get_extractor("default", fps="fast")
    extractor = get_extractor("default", fps="12.5")  # as --option fps=12.5 would give it
    assert extractor.fps == 12.5 and extractor.video_rate_hz == extractor.audio_rate_hz == 12.5


def test_register_a_new_extractor():
    @register_extractor("test-constant")
    class Constant(Extractor):
        """constant features"""

        def __init__(self, value: float = 1.0):
            self.value = value

        def params(self):
            return {"value": self.value}

    assert get_extractor("test-constant", value="2").params() == {"value": 2.0}
    with pytest.raises(ValueError, match="already registered"):
        register_extractor("test-constant")(type("Other", (Extractor,), {}))


@pytest.mark.parametrize("name", ["default", "classic"])
def test_every_extractor_on_a_clip(clip_mp4, name):
    extractor = get_extractor(name)
    video, audio = extractor.video(clip_mp4), extractor.audio(clip_mp4)
    assert video.dtype == audio.dtype == np.float32
    assert video.shape[1] == extractor.video_dim and audio.shape[1] == extractor.audio_dim
    assert np.isfinite(video).all() and np.isfinite(audio).all()
    assert len(video) == pytest.approx(2.0 * extractor.video_rate_hz, abs=1)
    assert len(audio) == pytest.approx(2.0 * extractor.audio_rate_hz, abs=1)
    assert abs(len(video) - len(audio)) <= 2


def test_default_events_line_up(clip_mp4):
    extractor = get_extractor("default")
    video, audio = extractor.video(clip_mp4), extractor.audio(clip_mp4)
    assert video.shape == (50, 610) and audio.shape == (50, 42)
    onset = audio[:, 40]
    motion = video[:, -1]
    for row in EVENT_ROWS:
        assert abs(int(np.argmax(onset[row - 3:row + 4])) - 3) <= 1
        assert onset[row - 1:row + 2].max() > 5 * np.median(onset)
    # a flash is seen starting and ending: four motion peaks, two at the event frames
    motion_peaks = peaks(motion, 4)
    for row in EVENT_ROWS:
        assert min(abs(p - row) for p in motion_peaks) <= 1
    assert peaks(onset, 2) == pytest.approx(EVENT_ROWS, abs=1)
    # the loudness and the bands rise during the tone burst
    assert audio[EVENT_ROWS[0] + 1, 41] > audio[EVENT_ROWS[0] - 3, 41] + 1.0


def test_default_sees_an_audio_offset(media):
    path = media.clip("late.mp4", audio_offset_s=0.2)
    onset = get_extractor("default").audio(path)[:, 40]
    assert peaks(onset, 2) == pytest.approx([r + 5 for r in EVENT_ROWS], abs=1)


def test_default_on_single_stream_files(media):
    extractor = get_extractor("default")
    audio = extractor.audio(media.audio("tone.wav"))
    assert audio.shape == (50, 42)
    assert peaks(audio[:, 40], 2) == pytest.approx(EVENT_ROWS, abs=1)
    video = extractor.video(media.clip("silent.mp4", with_audio=False))
    assert video.shape == (50, 610)
    with pytest.raises(AvmatchError, match="no audio stream"):
        extractor.audio(media.clip("silent.mp4", with_audio=False))


def test_default_features_do_not_depend_on_the_clip(media):
    """Fixed scaling: the same picture and sound give the same rows in a longer clip."""
    extractor = get_extractor("default")
    short, long = media.clip("clip.mp4"), media.clip("long.mp4", duration_s=3.0)
    np.testing.assert_allclose(extractor.video(short)[:45], extractor.video(long)[:45], atol=0.05)
    np.testing.assert_allclose(extractor.audio(short)[:45, :40], extractor.audio(long)[:45, :40], atol=0.3)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_classic_video_rows_do_not_depend_on_how_frames_arrive(media, monkeypatch, chunk):
    """Each frame's motion is its change to the next frame and its onset the rise since the one
    before: frames arriving a few at a time give the rows one block gives."""
    import avmatch.features.classic as classic

    path = media.clip("three.mp4", duration_s=3.0, size=(96, 64))
    whole = get_extractor("classic").video(path)
    decode = classic.iter_video_frames
    monkeypatch.setattr(classic, "iter_video_frames", lambda *a, **k: decode(*a, **{**k, "chunk": chunk}))
    np.testing.assert_allclose(get_extractor("classic").video(path), whole, atol=1e-5)


def test_classic_layout(media):
    path = media.clip("three.mp4", duration_s=3.0, size=(96, 64))
    extractor = get_extractor("classic")
    video, audio = extractor.video(path), extractor.audio(path)
    assert video.shape == (3, 1024) and audio.shape == (3, 128)
    assert np.abs(video).max() <= 2.0 and video.std() > 0.05
    np.testing.assert_array_equal(video, get_extractor("classic").video(path))  # seeded projection
    assert not np.allclose(video, get_extractor("classic", seed=1).video(path))
    # the seconds with a flash and a tone differ from the quiet one
    assert np.linalg.norm(audio[0] - audio[2]) > np.linalg.norm(audio[0] - audio[1]) * 0.5


@pytest.mark.parametrize("at_s", [1.25, 1.75])
def test_classic_rows_keep_when_within_the_second_things_happen(tmp_path, at_s):
    """A flash and a click a quarter or three quarters into second 1: the row of that second says
    which tenth they fell in, the same tenth in both (the audio's per-tenth onsets; the video's
    per-frame motion, read back through the fixed projection)."""
    from avmatch.features.classic import PER_FRAME
    from avmatch.media import write_media

    fps, sr = 25.0, 16000
    frames = np.full((75, 32, 32, 3), 0.2, np.float32)
    frames[int(at_s * fps) : int(at_s * fps) + 4] = 0.9  # 160 ms of flash: seen by frames sampled every 100 ms
    audio = 0.001 * np.random.default_rng(0).standard_normal(3 * sr).astype(np.float32)
    audio[int(at_s * sr) : int(at_s * sr) + 800] += np.hanning(800).astype(np.float32) * 0.8
    write_media(tmp_path / "v.mp4", frames, None, fps=fps)
    write_media(tmp_path / "a.wav", None, audio, sample_rate=sr)
    extractor = get_extractor("classic")
    onsets = extractor.audio(tmp_path / "a.wav")[1, 64:74]  # second 1, onset strength per tenth
    assert int(np.argmax(onsets)) == int((at_s - 1) * 10), onsets  # the tenth the click starts in
    row = extractor.video(tmp_path / "v.mp4")[1]
    stats = np.linalg.lstsq(extractor.projection.T, row, rcond=None)[0]
    energy = stats[144 : 144 + extractor.frames_per_s]  # per-frame motion energy of the second
    assert int(np.argmax(energy)) == int((at_s - 1) * 10), energy  # the same tenth as the click's
    assert PER_FRAME * extractor.frames_per_s == len(stats) - 144


def test_logmel_streams_like_one_block():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(16000 * 3 + 123).astype(np.float32) * 0.1
    logmel = LogMel(16000, hop=640, win=1280, n_mels=40)
    whole = np.concatenate([m for m, _ in logmel.rows([signal])])
    cuts = np.sort(rng.integers(0, signal.size, 20))
    pieces = np.concatenate([m for m, _ in logmel.rows(np.split(signal, cuts))])
    assert whole.shape == (round(signal.size / 640), 40)
    np.testing.assert_allclose(pieces, whole, atol=1e-4)
    odd = LogMel(16000, hop=16000 / 30, win=1067, n_mels=40)  # 30 fps: a fractional hop
    assert len(np.concatenate([m for m, _ in odd.rows(np.split(signal, cuts))])) == round(signal.size * 30 / 16000)


def test_mel_filterbank_covers_the_band():
    fb = mel_filterbank(16000, 512, 64, 125.0, 7500.0)
    assert fb.shape == (64, 257) and (fb.sum(axis=1) > 0).all()
    centres = fb.argmax(axis=1)
    assert (np.diff(centres) >= 0).all()


def test_speed_against_bare_decode(media):
    """Printed, never asserted: extraction time against a bare PyAV decode of the same file."""
    path = media.clip("ten_seconds.mp4", duration_s=10.0, size=(320, 240), events=(1, 3, 5, 7, 9))

    def bare():
        with av.open(str(path)) as c:
            c.streams.video[0].thread_type = "AUTO"
            for _ in c.decode(video=0):
                pass
        with av.open(str(path)) as c:
            for _ in c.decode(audio=0):
                pass

    def best(fn):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    base = best(bare)
    for name in ("default", "classic"):
        extractor = get_extractor(name)
        took = best(lambda e=extractor: (e.video(path), e.audio(path)))
        print(f"\n{name}: extract {took * 1e3:.0f} ms, bare decode {base * 1e3:.0f} ms, ratio {took / base:.2f} "
              f"(10 s clip, 320x240 H.264 + AAC)")
    assert read_audio(path).size == pytest.approx(160000, abs=800)


def test_default_motion_maps_say_where(tmp_path):
    """A square that moves in the left half lights up the left half of the 16x16 motion map only."""
    from avmatch.media import write_media

    frames = np.full((20, 64, 64, 3), 0.12, np.float32)
    for k in range(20):
        frames[k, 24:36, 4 + k : 12 + k] = 0.86
    path = write_media(tmp_path / "left.mp4", frames, None)
    video = get_extractor("default").video(path)
    moving = video[5:15, 64 + 32 + 256 : 64 + 32 + 512].reshape(-1, 16, 16)
    assert moving[:, :, :8].sum() > 20 * moving[:, :, 8:].sum()
    signed = video[5:15, 64 + 32 : 64 + 32 + 256].reshape(-1, 16, 16)
    assert (signed > 0.05).any() and (signed < -0.05).any()  # a leading and a trailing edge


def test_default_lighting_is_not_motion(tmp_path):
    """The whole picture brightening is lighting: the signed map stays flat, the lighting column moves."""
    from avmatch.media import write_media

    frames = np.stack([np.full((32, 32, 3), (40 + 6 * k) / 255, np.float32) for k in range(12)])
    video = get_extractor("default").video(write_media(tmp_path / "fade.mp4", frames, None))
    signed = video[2:10, 64 + 32 : 64 + 32 + 256]
    assert np.abs(signed).max() < 0.1 and (video[2:10, -2] > 0.1).all()


def test_augmented_audio_is_what_the_extractor_would_give(clip_mp4):
    """Augmentation changes only the bands, then recomputes onset and loudness as the extractor does;
    a pure level change moves bands and loudness by the same amount and leaves the onset alone."""
    from avmatch.features.frames import mel_features

    extractor = get_extractor("default")
    audio = extractor.audio(clip_mp4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        aug = extractor.augment_audio(audio, rng)
        assert aug.shape == audio.shape and np.isfinite(aug).all()
        np.testing.assert_allclose(aug, mel_features(aug[:, :40] * 25.0 - 50.0), atol=1e-4)
    again = mel_features(audio[:, :40] * 25.0 - 50.0 + 6.0)  # 6 dB louder
    np.testing.assert_allclose(again[:, :40] - audio[:, :40], 6.0 / 25.0, atol=1e-4)
    np.testing.assert_allclose(again[:, 40], audio[:, 40], atol=1e-4)
