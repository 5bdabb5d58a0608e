"""Decoding media files to arrays: frame counts, sizes, timing, audio length and rate, bad files."""

from __future__ import annotations

import time

import numpy as np
import pytest

from avmatch.errors import AvmatchError
from avmatch.media import iter_audio, iter_video_frames, probe, read_audio, read_video
from avmatch.testing.mediagen import EVENTS, FLASH_S, faststart, has_encoder, make_clip

SR = 16000


def brightness(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


def first_loud_s(audio: np.ndarray, sample_rate: int = SR) -> float:
    return float(np.argmax(np.abs(audio) > 0.1) / sample_rate)


def test_probe_clip(clip_mp4):
    info = probe(clip_mp4)
    assert info.has_video and info.has_audio
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    assert info.fps == pytest.approx(25.0)
    assert info.sample_rate == 44100 and info.channels == 2
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.video_duration_s == pytest.approx(2.0, abs=0.05)
    assert info.audio_duration_s == pytest.approx(2.0, abs=0.05)


def test_frames_count_size_and_flash_timing(clip_mp4):
    frames = read_video(clip_mp4, fps=25.0)
    assert frames.shape == (50, 48, 64, 3) and frames.dtype == np.uint8
    bright = brightness(frames)
    flashed = np.flatnonzero(bright > (bright.max() + bright.min()) / 2)
    expected = [k for k in range(50) if any(e <= k / 25 < e + FLASH_S - 1e-9 for e in EVENTS)]
    assert flashed.tolist() == expected  # frames 12-14 and 32-34


def test_frames_resized_gray_and_resampled(clip_mp4):
    gray = read_video(clip_mp4, fps=10.0, size=(16, 12), gray=True)
    assert gray.shape == (20, 12, 16)
    bright = brightness(gray)
    assert set(np.argsort(bright)[-2:]) == {5, 13}  # the frames at 0.5 s and 1.3 s show the flashes
    short = next(iter_video_frames(clip_mp4, size=24))
    assert short.shape[1:] == (24, 32, 3)  # short side 24, aspect kept


def test_frames_come_in_bounded_chunks(clip_mp4):
    chunks = list(iter_video_frames(clip_mp4, size=(8, 8), chunk=8))
    assert all(len(c) <= 8 for c in chunks) and sum(map(len, chunks)) == 50
    parts = list(iter_audio(clip_mp4, chunk_s=0.25))
    assert all(p.size <= 4000 for p in parts) and sum(p.size for p in parts) == pytest.approx(32000, abs=800)


def test_variable_frame_rate_is_resampled(media):
    times = [0.0, 0.03, 0.1, 0.48, 0.5, 0.9, 1.5, 1.9]
    for name in ("vfr.mkv", "vfr.mp4"):
        path = media.clip(name, frame_times=times, with_audio=False)
        frames = read_video(path, fps=25.0, size=(16, 12), gray=True)
        assert 47 <= len(frames) <= 50
        bright = brightness(frames)
        flashed = np.flatnonzero(bright > (bright.max() + bright.min()) / 2)
        # frames at 0.48 and 0.5 s flash; the next decoded frame (0.9 s) does not: output 12..22 hold it
        assert flashed.tolist() == list(range(12, 22 + 1))


def test_rotation_is_honoured(media):
    path = media.clip("rotated.mp4", rotation=90, with_audio=False, events=())
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    frame = read_video(path)[0]
    assert frame.shape == (64, 48, 3)
    red = frame[..., 0].astype(int) - frame[..., 1]
    # the red mark, top left as stored, shows bottom left once turned 90 degrees counter-clockwise
    assert red[-8:, :8].mean() > 100 and red[:8, :8].mean() < 50


@pytest.mark.parametrize("name", ["tone.wav", "tone.flac", "tone.mp3", "tone.m4a", "tone.opus"])
def test_audio_files_decode_to_mono_16k(media, name):
    if name.endswith(".opus") and not has_encoder("libopus"):
        pytest.skip("this PyAV build has no Opus encoder")
    path = media.audio(name)
    info = probe(path)
    assert info.has_audio and not info.has_video
    audio = read_audio(path, SR)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size / SR == pytest.approx(2.0, abs=0.05)
    assert first_loud_s(audio) == pytest.approx(EVENTS[0], abs=0.01)


def test_audio_of_a_clip_keeps_timing_and_offset(media):
    path = media.clip("offset.mp4", audio_offset_s=0.2)
    audio = read_audio(path, SR)
    assert audio.size / SR == pytest.approx(2.0, abs=0.05)
    assert first_loud_s(audio) == pytest.approx(EVENTS[0] + 0.2, abs=0.01)


@pytest.mark.parametrize("name", ["surround.flac", "surround.m4a"])
def test_surround_is_down_mixed(media, name):
    path = media.audio(name, channels=6)
    assert probe(path).channels == 6
    audio = read_audio(path, SR)
    assert audio.ndim == 1 and audio.size / SR == pytest.approx(2.0, abs=0.05)
    assert np.abs(audio).max() > 0.2  # the tone survives the down-mix
    assert first_loud_s(audio) == pytest.approx(EVENTS[0], abs=0.01)


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_audio_resampled_to_any_rate(clip_mp4, rate):
    audio = read_audio(clip_mp4, rate)
    assert audio.size / rate == pytest.approx(2.0, abs=0.05)
    assert first_loud_s(audio, rate) == pytest.approx(EVENTS[0], abs=0.01)


def test_webm_vp9_opus(media):
    if not (has_encoder("libvpx-vp9") and has_encoder("libopus")):
        pytest.skip("this PyAV build cannot encode VP9/Opus")
    path = media.clip("clip.webm")
    info = probe(path)
    assert info.video_codec == "vp9" and info.audio_codec == "opus"
    assert len(read_video(path, size=(16, 12))) == pytest.approx(50, abs=1)
    assert read_audio(path).size / SR == pytest.approx(2.0, abs=0.05)


def test_streams_of_different_lengths(media):
    path = media.clip("short_audio.mp4", duration_s=2.0, audio_duration_s=1.2)
    info = probe(path)
    assert info.video_duration_s == pytest.approx(2.0, abs=0.05)
    assert info.audio_duration_s == pytest.approx(1.2, abs=0.05)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert len(read_video(path, size=8)) == 50
    assert read_audio(path).size / SR == pytest.approx(1.2, abs=0.05)


def test_video_only_and_audio_only(media):
    silent = media.clip("silent.mp4", with_audio=False)
    info = probe(silent)
    assert info.has_video and not info.has_audio and info.audio_duration_s is None
    with pytest.raises(AvmatchError, match="no audio stream"):
        read_audio(silent)
    with pytest.raises(AvmatchError, match="no video stream"):
        next(iter_video_frames(media.audio("tone.wav")))


def _one_line_error(path, fn=probe) -> str:
    with pytest.raises(AvmatchError) as err:
        fn(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    return text


def test_missing_empty_and_non_media_files(tmp_path):
    assert "no such file" in _one_line_error(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert "empty" in _one_line_error(tmp_path / "empty.mp4")
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 50)
    assert "not a readable media file" in _one_line_error(tmp_path / "notes.mp4")
    assert "not a readable media file" in _one_line_error(tmp_path / "notes.mp4", read_audio)
    assert "folder" in _one_line_error(tmp_path)


@pytest.mark.parametrize("kind", ["mp4", "faststart.mp4", "mkv", "mp3", "garbled.mp4"])
def test_damaged_files_fail_cleanly_or_decode_less(media, tmp_path, kind):
    if kind == "mp3":
        good = media.audio("tone.mp3")
    elif kind == "mkv":
        good = media.clip("clip.mkv")
    else:
        good = faststart(media.clip("clip.mp4"), tmp_path / "fast.mp4") if kind != "mp4" else media.clip("clip.mp4")
    data = bytearray(good.read_bytes())
    if kind == "garbled.mp4":  # random bytes over a tenth of the file, index intact
        start = len(data) // 3
        data[start:start + len(data) // 10] = np.random.default_rng(0).integers(0, 256, len(data) // 10,
                                                                              dtype=np.uint8).tobytes()
    else:  # cut in half
        data = data[: len(data) // 2]
    bad = tmp_path / f"bad.{kind}"
    bad.write_bytes(bytes(data))
    started = time.perf_counter()
    try:
        info = probe(bad)
        if info.has_video:
            assert len(read_video(bad, size=8)) <= 50
        if info.has_audio:
            assert read_audio(bad).size <= 2.05 * SR
    except AvmatchError as err:
        assert str(err).startswith(f"{bad}: ") and "\n" not in str(err)
    assert time.perf_counter() - started < 10


def test_mkv_with_different_rates(media):
    path = media.clip("clip.mkv")
    frames = read_video(path, fps=12.5, size=(8, 6))
    assert frames.shape == (25, 6, 8, 3)


def test_make_clip_writes_what_it_says(tmp_path):
    path = make_clip(tmp_path / "c.mp4", duration_s=1.0, fps=30.0, size=(32, 24), sample_rate=48000)
    info = probe(path)
    assert info.fps == pytest.approx(30.0) and (info.width, info.height) == (32, 24)
    assert info.sample_rate == 48000


def test_a_frame_stamped_hours_after_the_last_is_refused_not_filled(tmp_path):
    """A tiny mkv whose fourth frame claims 5 h: filling the gap would make 450,000 frames of a few
    bytes (it took 4.4 GB, then MemoryError); it is refused in one line instead."""
    from avmatch.testing.badinputs import late_frame_mkv

    path = late_frame_mkv(tmp_path / "late.mkv")
    with pytest.raises(AvmatchError, match="corrupt timestamps: a frame at 5.0 h"):
        for _ in iter_video_frames(path, fps=25.0, size=(16, 16)):
            pass
