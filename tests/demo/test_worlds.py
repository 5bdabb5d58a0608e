"""The second scene generator: every family sounds where its picture changes, and its clips are real media."""

import json

import numpy as np
import pytest

from avmatch.demo import scenes, worlds
from avmatch.media import probe, read_audio, read_video

DURATION_S = 2.0
SIZE = (32, 32)


def _still_camera(rng, n, w, h, fps):
    return np.full(n, 1.0 / w), np.zeros(n), np.zeros(n)


@pytest.fixture
def only_the_cause(monkeypatch):
    """Scenes without what hides the cause: a still camera, steady light, no distractors, no off-screen sounds."""
    monkeypatch.setattr(worlds, "_camera", _still_camera)
    monkeypatch.setattr(worlds, "_lighting", lambda *args: None)
    monkeypatch.setattr(worlds, "_distractors", lambda *args: None)
    monkeypatch.setattr(worlds, "_uncaused", lambda *args: None)


def test_families_are_new():
    assert len(worlds.FAMILIES) >= 5
    assert not set(worlds.FAMILIES) & set(scenes.FAMILIES)
    assert worlds.available_families() == [f for f in worlds.FAMILIES if f != "talk"]  # talk: recordings needed
    with pytest.raises(ValueError, match="unknown worlds family"):
        worlds.make_scene(0, family="bounce")


@pytest.mark.parametrize("family", worlds.available_families())  # voices: tests/demo/test_recordings.py
def test_family_renders_with_events_inside_the_clip(family):
    scene = worlds.make_scene([3, 4], family=family, duration_s=DURATION_S, size=SIZE)
    assert scene.family == family
    assert scene.frames.shape == (50, 32, 32, 3) and scene.frames.dtype == np.float32
    assert 0.0 <= scene.frames.min() and scene.frames.max() <= 1.0 and scene.frames.std() > 0.02
    assert scene.audio.dtype == np.float32 and len(scene.audio) == int(DURATION_S * scene.sample_rate)
    assert np.isfinite(scene.audio).all() and 0.01 < np.abs(scene.audio).max() <= 1.0
    assert scene.events_s and all(0.0 <= t < DURATION_S for t in scene.events_s)
    assert scene.events_s == sorted(scene.events_s)
    assert all(0.0 <= t < DURATION_S for t in scene.uncaused_s)


@pytest.mark.parametrize("family", worlds.available_families())  # voices: tests/demo/test_recordings.py
def test_each_event_starts_a_sound(family, only_the_cause):
    sr = worlds.SAMPLE_RATE
    w = int(0.04 * sr)
    louder, ratios = [], []
    for seed in range(3):
        scene = worlds.make_scene([5, seed], family=family, duration_s=DURATION_S, size=SIZE)
        after, before = [], []
        for t in scene.events_s:
            if t < 0.05:
                continue
            i = int(round(t * sr))
            a, b = scene.audio[i : i + w], scene.audio[i - w : i]
            after.append(np.mean(a ** 2))
            before.append(np.mean(b ** 2))
            louder.append(np.abs(a).max() > 1.2 * np.abs(b).max())
        ratios.append(np.mean(after) / np.mean(before))
    assert len(louder) >= 3
    assert min(ratios) > 2  # the 40 ms after the events hold new sounds
    assert np.mean(louder) >= 0.75  # and nearly every event on its own


@pytest.mark.parametrize("family", worlds.available_families())  # voices: tests/demo/test_recordings.py
def test_the_picture_changes_at_events(family, only_the_cause):
    near, far = [], []
    for seed in range(3):
        scene = worlds.make_scene([6, seed], family=family, duration_s=DURATION_S, size=SIZE)
        change = np.abs(np.diff(scene.frames, axis=0)).mean(axis=(1, 2, 3))  # into frame k + 1
        t_frame = scene.frame_times()[1:]
        is_near = np.zeros(len(change), bool)
        is_far = np.ones(len(change), bool)
        for t in scene.events_s:
            is_near |= (t_frame >= t - 0.5 / scene.fps) & (t_frame < t + 2.5 / scene.fps)
            is_far &= np.abs(t_frame - t) > 0.2
        near.extend(change[is_near])
        far.extend(change[is_far])
    assert near and far
    assert np.mean(near) > 1.2 * np.mean(far)


def test_deterministic_per_seed():
    a = worlds.make_scene([1, 2], duration_s=DURATION_S, size=SIZE)
    b = worlds.make_scene([1, 2], duration_s=DURATION_S, size=SIZE)
    c = worlds.make_scene([1, 3], family=a.family, duration_s=DURATION_S, size=SIZE)
    assert a.family == b.family and a.events_s == b.events_s and a.uncaused_s == b.uncaused_s
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.events_s != c.events_s and not np.array_equal(a.audio, c.audio)


def test_mouth_speaks_without_speech(monkeypatch):
    from avmatch import speech

    monkeypatch.setattr(speech, "speech_available", lambda: False)
    assert worlds._spoken("hello", worlds.SAMPLE_RATE, np.random.default_rng(0), 50) is None
    scene = worlds.make_scene([2, 2], family="mouth", duration_s=DURATION_S, size=SIZE)
    assert scene.events_s and np.abs(scene.audio).max() > 0.01


def test_corpus_decodes_and_says_what_it_holds(tmp_path):
    families = ["drums", "keys", "mouth"]
    clips = worlds.make_corpus(tmp_path / "c", 3, duration_s=DURATION_S, seed=9, size=SIZE, families=families, workers=2)
    assert [p.name for p in clips] == [f"clip{i:05d}.mp4" for i in range(3)]
    rows = [json.loads(line) for line in (tmp_path / "c" / scenes.SCENES_FILE).read_text().splitlines()]
    assert [r["file"] for r in rows] == [p.name for p in clips]
    for i, (path, row) in enumerate(zip(clips, rows, strict=True)):
        assert row["generator"] == "worlds" and row["family"] in families
        scene = worlds.make_scene([9, i], duration_s=DURATION_S, size=SIZE, families=families)
        assert row["family"] == scene.family and row["events_s"] == [round(t, 4) for t in scene.events_s]
        info = probe(path)
        assert info.has_video and info.has_audio and (info.width, info.height) == SIZE
        assert info.video_duration_s == pytest.approx(DURATION_S, abs=0.05)
        assert info.audio_duration_s == pytest.approx(DURATION_S, abs=0.05)
        frames = read_video(path, size=SIZE)
        assert frames.shape == (50, 32, 32, 3)
        audio = read_audio(path, worlds.SAMPLE_RATE)
        assert abs(len(audio) - len(scene.audio)) < 0.02 * worlds.SAMPLE_RATE
        # what was written is what was rendered: the decoded sound follows the scene's envelope
        n = min(len(audio), len(scene.audio))
        env = [np.abs(x[:n].reshape(-1, 800)).mean(1) for x in (audio, scene.audio)]
        assert np.corrcoef(*env)[0, 1] > 0.9
    key = scenes.make_test_set(clips, tmp_path / "test", seed=1, max_offset_s=0.5)  # scenes' test-set maker takes them
    assert len(key.read_text().splitlines()) == 4 and len(list((tmp_path / "test" / "videos").glob("*.mp4"))) == 3
    again = worlds.make_corpus(tmp_path / "d", 1, duration_s=DURATION_S, seed=9, size=SIZE, families=families, first=2)
    row = json.loads((tmp_path / "d" / scenes.SCENES_FILE).read_text())
    assert again[0].name == "clip00002.mp4" and row["events_s"] == rows[2]["events_s"]
