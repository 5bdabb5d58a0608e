"""The scene generator: real media files that decode, pair up, and carry their timing into a test set."""

import csv
import json

import numpy as np
import pytest

from avmatch.demo import scenes
from avmatch.media import probe, read_audio, read_video

DURATION_S = 2.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return scenes.make_corpus(out, 4, duration_s=DURATION_S, seed=5, families=["bounce", "lamps", "motor", "talker"])


@pytest.fixture(scope="module")
def test_set(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("testset")
    return scenes.make_test_set(clips, out, seed=2, max_offset_s=0.5)


def _lag_s(reference: np.ndarray, shifted: np.ndarray, sample_rate: int, max_s: float) -> float:
    """The offset at which ``shifted`` best matches ``reference`` (positive: it starts later in the picture)."""
    from scipy.signal import correlate

    xc = correlate(reference, shifted, mode="full", method="fft")  # index n - 1 + lag: reference[t + lag] . shifted[t]
    k = int(max_s * sample_rate)
    mid = len(shifted) - 1
    return (int(np.argmax(xc[mid - k : mid + k + 1])) - k) / sample_rate


def test_clips_decode_with_both_streams(clips):
    assert [p.name for p in clips] == [f"clip{i:05d}.mp4" for i in range(4)]
    for path in clips:
        info = probe(path)
        assert info.has_video and info.has_audio
        assert (info.width, info.height) == (64, 64)
        assert info.fps == pytest.approx(25.0)
        assert info.video_duration_s == pytest.approx(DURATION_S, abs=0.05)
        assert info.audio_duration_s == pytest.approx(DURATION_S, abs=0.05)
    frames = read_video(clips[0], size=(64, 64))
    assert frames.shape == (50, 64, 64, 3) and frames.std() > 5  # a picture, not a blank
    audio = read_audio(clips[0], scenes.SAMPLE_RATE)
    assert abs(len(audio) - DURATION_S * scenes.SAMPLE_RATE) < 0.02 * scenes.SAMPLE_RATE
    assert 0.05 < np.abs(audio).max() <= 1.0


def test_scenes_file_and_determinism(clips, tmp_path):
    rows = [json.loads(line) for line in (clips[0].parent / scenes.SCENES_FILE).read_text().splitlines()]
    assert [r["file"] for r in rows] == [p.name for p in clips]
    assert all(r["family"] in scenes.FAMILIES and r["events_s"] for r in rows)
    again = scenes.make_corpus(tmp_path / "again", 2, duration_s=DURATION_S, seed=5,
                               families=["bounce", "lamps", "motor", "talker"], first=2)
    rows_again = [json.loads(line) for line in (tmp_path / "again" / scenes.SCENES_FILE).read_text().splitlines()]
    assert [r["events_s"] for r in rows_again] == [r["events_s"] for r in rows[2:]]  # clip i depends on (seed, i) only
    assert [p.name for p in again] == ["clip00002.mp4", "clip00003.mp4"]


@pytest.mark.parametrize("family", ["bounce", "lamps", "motor", "talker"])
def test_every_family_makes_sound_where_the_picture_changes(family):
    scene = scenes.make_scene([1, 2], family=family, duration_s=DURATION_S)
    assert scene.family == family and scene.frames.shape == (50, 64, 64, 3)
    assert len(scene.audio) == int(DURATION_S * scenes.SAMPLE_RATE)
    assert np.isfinite(scene.audio).all() and np.abs(scene.audio).max() <= 1.0
    assert scene.events_s and all(0 <= t < DURATION_S for t in scene.events_s)
    # each on-screen event starts a sound: louder just after it than just before
    sr, w = scene.sample_rate, scene.sample_rate // 20
    events = [t for t in scene.events_s if t >= 0.05]
    after = np.concatenate([scene.audio[int(t * sr) : int(t * sr) + w] for t in events])
    before = np.concatenate([scene.audio[int(t * sr) - w : int(t * sr)] for t in events])
    assert np.mean(after ** 2) > 1.5 * np.mean(before ** 2)


def test_speech_only_with_espeak(monkeypatch):
    monkeypatch.setattr(scenes.speech, "speech_available", lambda: False)
    assert "speech" not in scenes.available_families()
    assert set(scenes.available_families()) == {"bounce", "lamps", "motor", "talker"}
    with pytest.raises(ValueError, match="unknown scene family"):
        scenes.make_scene(0, family="opera")


def test_shift_audio_keeps_length_and_moves_events():
    rng = np.random.default_rng(0)
    sr = 1000
    audio = 0.01 * rng.standard_normal(2000).astype(np.float32)
    audio[500:520] += 1.0
    later = scenes.shift_audio(audio, -0.3, sr, rng)  # audio starts 0.3 s before the picture
    earlier = scenes.shift_audio(audio, 0.2, sr, rng)  # audio starts 0.2 s into the picture
    assert len(later) == len(earlier) == len(audio)
    assert np.argmax(later > 0.5) == 800 and np.argmax(earlier > 0.5) == 300
    assert np.abs(later[:300]).max() < 0.1  # padded with the track's own background, not its events


def test_test_set_is_silent_videos_and_shifted_audio(clips, test_set):
    rows = list(csv.DictReader(open(test_set)))
    assert list(rows[0]) == ["video", "audio", "offset_s", "source"]
    assert sorted(r["source"] for r in rows) == sorted(p.name for p in clips)
    assert len({r["video"] for r in rows} | {r["audio"] for r in rows}) == 2 * len(clips)
    root = test_set.parent
    for r in rows:
        video = probe(root / "videos" / f"{r['video']}.mp4")
        assert video.has_video and not video.has_audio
        assert video.video_duration_s == pytest.approx(DURATION_S, abs=0.05)
        audio_path = root / "audios" / f"{r['audio']}.wav"
        audio_info = probe(audio_path)
        assert audio_info.has_audio and not audio_info.has_video
        offset = float(r["offset_s"])
        assert abs(offset) <= 0.5
        original = read_audio(clips[0].parent / r["source"], scenes.SAMPLE_RATE)
        shifted = read_audio(audio_path, scenes.SAMPLE_RATE)
        assert len(shifted) == len(original)
        # the key's offset is where the audio really sits against the picture, to the millisecond
        assert _lag_s(original, shifted, scenes.SAMPLE_RATE, 0.6) == pytest.approx(offset, abs=0.002)


def test_speech_family_with_a_stand_in_espeak(tmp_path, monkeypatch):
    """The ``speech`` path end to end (subprocess, WAV, resampling, mouth) with a stand-in ``espeak-ng``
    program, as where the bundled library is missing, that says every word as a 0.4 s buzz at 22.05 kHz,
    with silence around it."""
    import os
    import stat
    import sys

    fake = tmp_path / "espeak-ng"
    fake.write_text(f"""#!{sys.executable}
import sys
import numpy as np
from scipy.io import wavfile
out = sys.argv[sys.argv.index("-w") + 1]
t = np.arange(int(22050 * 0.4)) / 22050
word = np.sin(2 * np.pi * 150 * t) * np.sin(np.pi * t / 0.4)
wavfile.write(out, 22050, (np.concatenate([np.zeros(2000), word, np.zeros(2000)]) * 20000).astype(np.int16))
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(scenes.speech, "_library", lambda: None)
    assert "speech" in scenes.available_families()
    scene = scenes.make_scene([3, 4], family="speech", duration_s=DURATION_S)
    assert scene.family == "speech" and scene.events_s
    assert scene.frames.shape == (50, 64, 64, 3)
    sr = scene.sample_rate
    for t in scene.events_s:  # each word sounds where the scene says it starts (silence trimmed)
        assert np.abs(scene.audio[int(t * sr) : int((t + 0.05) * sr)]).max() > 0.02
