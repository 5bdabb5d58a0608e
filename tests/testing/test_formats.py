"""Every audio format a user brings, made from one clean track: each decodes back and is degraded as it says."""

import numpy as np
import pytest

from avmatch.errors import AvmatchError
from avmatch.media import probe, read_audio
from avmatch.testing.formats import FORMATS, reencode, write_format

SR = 16000
DURATION_S = 2.0
DECODERS = {"wav": "pcm_s16le", "flac": "flac", "mp3-24k": "mp3float", "mp3-64k": "mp3float", "mp3-128k": "mp3float",
            "aac": "aac", "opus": "opus", "tel-8k": "pcm_mulaw", "gain+12": "pcm_s16le", "gain-12": "pcm_s16le",
            "noise": "pcm_s16le", "room": "pcm_s16le"}


def _clean(peak: float = 0.25) -> np.ndarray:
    """Broadband sound: harmonics of 110 Hz up to 7.5 kHz, a hiss, and a beat every 0.25 s."""
    t = np.arange(int(DURATION_S * SR)) / SR
    rng = np.random.default_rng(0)
    x = sum(np.sin(2 * np.pi * 110 * k * t + rng.uniform(0, 2 * np.pi)) / np.sqrt(k) for k in range(1, 68))
    x = x * (0.6 + 0.4 * np.cos(2 * np.pi * 4 * t)) + 0.5 * rng.standard_normal(len(t))
    return (peak * x / np.abs(x).max()).astype(np.float32)


def _power_above(x: np.ndarray, hz: float) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(power[np.fft.rfftfreq(len(x), 1 / SR) > hz].sum())


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2)))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The clean track as a 16-bit WAV file."""
    return write_format(_clean(), SR, tmp_path_factory.mktemp("formats") / "clean", "wav")


@pytest.fixture(scope="module")
def decoded(source):
    """Each format's file, re-encoded from the clean WAV, and its sound decoded at 16 kHz."""
    out = {}
    for name in FORMATS:
        path = reencode(source, source.parent / "out", name, np.random.default_rng(1))
        out[name] = (path, read_audio(path, SR))
    return out


def test_the_formats_are_the_ones_users_bring():
    assert list(FORMATS) == list(DECODERS)


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_decodes_back_at_its_duration(decoded, name):
    path, audio = decoded[name]
    assert path.name == f"clean-{name}{FORMATS[name].suffix}" and path.is_file()
    info = probe(path)
    assert info.audio_codec == DECODERS[name] and not info.has_video
    lossy = FORMATS[name].codec in ("libmp3lame", "aac", "libopus")  # these pad the stream's ends
    assert len(audio) / SR == pytest.approx(DURATION_S, abs=0.1 if lossy else 1e-3)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01


def test_lossless_is_lossless_and_lossy_is_close(decoded):
    wav = decoded["wav"][1]
    assert np.abs(wav - _clean()).max() < 1e-4  # 16-bit rounding only
    assert np.array_equal(decoded["flac"][1], wav)
    for name in ("mp3-128k", "aac", "opus"):
        audio = decoded[name][1]
        n = min(len(audio), len(wav))
        assert np.corrcoef(audio[:n], wav[:n])[0, 1] > 0.8, name


def test_a_low_mp3_bit_rate_cuts_the_upper_band(decoded):
    wav = decoded["wav"][1]
    assert _power_above(decoded["mp3-24k"][1], 6000) < 0.01 * _power_above(wav, 6000)
    assert _power_above(decoded["mp3-128k"][1], 6000) > 0.3 * _power_above(wav, 6000)
    sizes = [decoded[n][0].stat().st_size for n in ("mp3-24k", "mp3-64k", "mp3-128k")]
    assert sizes == sorted(sizes) and sizes[2] > 3 * sizes[0]


def test_gain_changes_the_level_by_12_db(decoded):
    wav = decoded["wav"][1]
    assert _rms_db(decoded["gain+12"][1]) - _rms_db(wav) == pytest.approx(12.0, abs=0.3)
    assert _rms_db(decoded["gain-12"][1]) - _rms_db(wav) == pytest.approx(-12.0, abs=0.3)


def test_gain_clips_at_full_scale_like_a_recorder(tmp_path):
    loud = _clean(peak=0.8)  # +12 dB would reach 3.2
    audio = read_audio(write_format(loud, SR, tmp_path / "loud", "gain+12"), SR)
    assert np.abs(audio).max() <= 1.0
    assert np.mean(np.abs(audio) > 0.999) > 0.05  # flat tops where it clipped
    assert _rms_db(audio) - _rms_db(loud) < 11.5  # and clipping costs level


def test_telephone_is_8_khz_and_band_limited(decoded):
    path, audio = decoded["tel-8k"]
    assert probe(path).sample_rate == 8000
    wav = decoded["wav"][1]
    assert _power_above(audio, 4000) < 1e-4 * _power_above(wav, 0)
    power = np.abs(np.fft.rfft(audio)) ** 2
    wav_power = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / SR)
    low, mid = freqs < 150, (freqs > 500) & (freqs < 3000)
    # the band-pass: below 300 Hz goes, the middle of the voice band stays
    assert power[low].sum() < 0.05 * wav_power[low].sum()
    assert power[mid].sum() > 0.5 * wav_power[mid].sum()


def test_noise_is_added_at_10_db_snr_and_repeatable(source, decoded, tmp_path):
    wav, noisy = decoded["wav"][1], decoded["noise"][1]
    snr_db = _rms_db(wav) - _rms_db(noisy - wav)
    assert snr_db == pytest.approx(10.0, abs=0.5)
    noise = noisy - wav
    assert _power_above(noise, 4000) < 0.2 * _power_above(noise, 0)  # pink: most power low
    again = reencode(source, tmp_path / "again", "noise", np.random.default_rng(1))
    other = reencode(source, tmp_path / "other", "noise", np.random.default_rng(2))
    assert again.read_bytes() == decoded["noise"][0].read_bytes() != other.read_bytes()


def test_other_sample_rates_are_kept_or_moved_to_one_the_codec_takes(tmp_path):
    audio = _clean()[: SR // 2]
    at_44k = np.interp(np.arange(22050) / 44100, np.arange(len(audio)) / SR, audio).astype(np.float32)
    for name, rate in (("wav", 44100), ("mp3-64k", 44100), ("opus", 48000)):
        path = write_format(at_44k, 44100, tmp_path / name, name)
        assert probe(path).sample_rate == rate
        assert len(read_audio(path, 44100)) / 44100 == pytest.approx(0.5, abs=0.1)


def test_bad_requests_are_one_clear_line(tmp_path):
    with pytest.raises(AvmatchError, match="unknown audio format 'mp3-999k'; known: wav, flac"):
        write_format(_clean(), SR, tmp_path / "x", "mp3-999k")
    with pytest.raises(AvmatchError, match="non-empty, finite mono audio"):
        write_format(np.zeros(0, np.float32), SR, tmp_path / "x", "wav")
    silent = tmp_path / "silent.mp4"
    _silent_video(silent)
    with pytest.raises(AvmatchError, match="no audio"):
        reencode(silent, tmp_path, "wav")


def _silent_video(path) -> None:
    from avmatch.media import write_media

    write_media(path, np.zeros((5, 16, 16, 3), np.float32), None)


def test_a_room_smears_the_beats_and_adds_a_floor(decoded):
    """Reverberation fills the gaps between the beats: the envelope's swing shrinks."""
    def swing(x):
        frames = x[: len(x) // 400 * 400].reshape(-1, 400).astype(np.float64)
        env = 10 * np.log10((frames**2).mean(1) + 1e-12)
        return np.percentile(env, 95) - np.percentile(env, 5)

    wav, room = decoded["wav"][1], decoded["room"][1]
    assert len(room) == len(wav)
    assert swing(room) < swing(wav)
    n = min(len(room), len(wav))
    assert np.corrcoef(room[:n], wav[:n])[0, 1] > 0.3  # the direct sound is still there
