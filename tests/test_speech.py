"""Speech from the bundled eSpeak NG: real words, the same samples every time and in every process."""

import gc
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from avmatch import speech
from avmatch.demo import scenes
from avmatch.media import read_audio, read_video, write_media

SR = 16000

pytestmark = pytest.mark.skipif(speech._library() is None, reason="espeakng-loader is not installed")


def _band_share(x: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(power[(freqs >= lo_hz) & (freqs < hi_hz)].sum() / power.sum())


def _median_f0_hz(x: np.ndarray) -> float:
    """The median fundamental over the loud 40 ms frames, from the autocorrelation peak in 60-500 Hz."""
    win = int(0.04 * SR)
    frames = [x[i : i + win] for i in range(0, len(x) - win, win // 2)]
    loud = [f for f in frames if np.sqrt(np.mean(f ** 2)) > 0.1]
    lags = np.arange(SR // 500, SR // 60)
    f0 = []
    for f in loud:
        ac = np.correlate(f, f, "full")[win - 1 :]
        f0.append(SR / lags[np.argmax(ac[lags])])
    return float(np.median(f0))


def _say_in(context: str) -> np.ndarray | None:
    # garbage left by earlier tests (a PyAV filter graph) freed in a forked child can deadlock there: its
    # threads did not come along; collect it here first (the package's own pools use forkserver)
    gc.collect()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(context)) as pool:
        return pool.submit(speech.say, "yellow paper", SR, "en+m3", 150, 40).result()


def test_a_few_words_are_speech_of_plausible_length():
    audio = speech.say("seven rockets", SR)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.3 <= len(audio) / SR <= 3.0
    assert np.abs(audio).max() == pytest.approx(1.0)
    # voiced speech: most energy in the band of the voice and its formants, some hiss above it
    assert _band_share(audio, 80, 4000) > 0.8
    assert 0.001 < _band_share(audio, 4000, 8000) < 0.2
    # words, not one steady tone: the level changes between syllables
    rms = np.sqrt(np.convolve(audio ** 2, np.ones(320) / 320, "valid"))[::320]
    assert rms.max() > 5 * np.percentile(rms, 20)
    longer = speech.say("seven rockets and a yellow banana in the morning", SR)
    assert len(longer) > 2 * len(audio)


def test_same_arguments_give_the_same_samples():
    args = [("hello garden", "en+f3", 170, 60), ("thunder", "de", 300, 10), ("banana river", "en-us+f2", 150, 40)]
    first = [speech.say(text, SR, voice, speed, pitch) for text, voice, speed, pitch in args]
    time.sleep(1.05 - time.time() % 1.0)  # into the next second: eSpeak would seed its random numbers from the clock
    again = [speech.say(text, SR, voice, speed, pitch) for text, voice, speed, pitch in reversed(args)][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_every_listed_voice_speaks_and_voices_differ():
    said = {v: speech.say("one two three", SR, voice=v) for v in speech.VOICES}
    assert all(x is not None and 0.3 <= len(x) / SR <= 3.0 for x in said.values())
    lengths = {v: len(x) for v, x in said.items()}
    assert len(set(lengths.values())) > len(said) // 2  # accents and languages say it differently
    male, female = _median_f0_hz(said["en+m3"]), _median_f0_hz(said["en+f3"])
    assert female > 1.4 * male


def test_pitch_and_speed_do_what_they_say():
    low = speech.say("morning basket", SR, pitch=15)
    high = speech.say("morning basket", SR, pitch=85)
    assert _median_f0_hz(high) > 1.3 * _median_f0_hz(low)
    slow = speech.say("morning basket", SR, speed_wpm=100)
    fast = speech.say("morning basket", SR, speed_wpm=300)
    assert len(slow) > 1.8 * len(fast)


def test_sample_rate_is_resampled_not_relabelled():
    at_16k = speech.say("silver ticket", 16000)
    at_8k = speech.say("silver ticket", 8000)
    assert len(at_8k) == pytest.approx(len(at_16k) / 2, abs=2)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="unknown eSpeak voice 'qq-zz'"):
        speech.say("hello", SR, voice="qq-zz")
    with pytest.raises(ValueError, match="pitch"):
        speech.say("hello", SR, pitch=120)
    with pytest.raises(ValueError, match="speed_wpm"):
        speech.say("hello", SR, speed_wpm=20)
    assert speech.say("", SR) is None


def test_threads_get_their_own_words():
    words = ["hello", "window", "orange", "thunder"]
    alone = {w: speech.say(w, SR) for w in words}
    together: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda w=w: together.__setitem__(w, speech.say(w, SR))) for w in words * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(alone[w], together[w]) for w in words)


@pytest.mark.parametrize("context", ["fork", "forkserver"])
def test_workers_say_the_same_as_the_parent(context):
    here = speech.say("yellow paper", SR, "en+m3", 150, 40)  # the parent has used the library before forking
    assert np.array_equal(_say_in(context), here)


def test_neither_library_nor_program_means_no_speech(monkeypatch):
    monkeypatch.setattr(speech, "_library", lambda: None)
    monkeypatch.setenv("PATH", "")
    assert not speech.speech_available()
    assert speech.say("hello", SR) is None
    assert "speech" not in scenes.available_families()


def test_speech_scene_renders_to_a_file_that_decodes_with_its_words(tmp_path):
    assert "speech" in scenes.available_families()
    scene = scenes.make_scene([3, 4], family="speech", duration_s=2.0)
    assert scene.family == "speech" and scene.events_s
    sr = scene.sample_rate
    for t in scene.events_s:  # each word sounds where the scene says it starts
        assert np.abs(scene.audio[int(t * sr) : int((t + 0.05) * sr)]).max() > 0.02
    path = write_media(tmp_path / "speech.mp4", scene.frames, scene.audio, scene.fps, sr)
    audio, frames = read_audio(path, sr), read_video(path, scene.fps)
    assert len(frames) == len(scene.frames)
    n = min(len(audio), len(scene.audio))
    assert abs(len(audio) - len(scene.audio)) < 0.1 * sr and np.corrcoef(audio[:n], scene.audio[:n])[0, 1] > 0.9


def test_a_corpus_with_speech_is_the_same_made_by_one_or_two_processes(tmp_path):
    one = scenes.make_corpus(tmp_path / "one", 2, duration_s=1.0, seed=9, families=["speech"])
    two = scenes.make_corpus(tmp_path / "two", 2, duration_s=1.0, seed=9, families=["speech"], workers=2)
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(read_audio(a, SR), read_audio(b, SR))
