"""What makes matching survive the formats users bring: the default extractor, its training-time
re-recording of audio features, and the sync model's level-free audio, on real re-encoded files."""

import numpy as np
import pytest
import torch

from avmatch.demo.scenes import SAMPLE_RATE, make_scene
from avmatch.features import get_extractor
from avmatch.models import build_model
from avmatch.testing.formats import write_format


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """One generated scene's sound as wav, 12 dB quieter wav and mp3 at 24 kbit/s: features of each."""
    root = tmp_path_factory.mktemp("robust")
    audio = make_scene([5, 1], family="bounce", duration_s=3.0, size=(32, 32)).audio
    extractor = get_extractor("default")
    return {name: extractor.audio(write_format(audio, SAMPLE_RATE, root / name, name))
            for name in ("wav", "gain-12", "mp3-24k")}


def test_level_free_audio_ignores_the_recorder_level(versions):
    """The same sound 12 dB quieter: the raw features move, the centred audio tower's embeddings don't."""
    wav, quiet = versions["wav"], versions["gain-12"]
    n = min(len(wav), len(quiet))
    loud = wav[:n, :40] > -1.0  # bands well above the floor, where a level change is a pure shift
    assert np.abs(wav[:n, :40] - quiet[:n, :40])[loud].mean() > 0.4  # 12 dB = 0.48 in scaled units
    torch.manual_seed(0)
    model = build_model("sync", 610, 42, audio_centre=25).eval()
    lengths = torch.tensor([n])
    with torch.no_grad():
        e_wav, e_quiet = (model.encode_audio(torch.from_numpy(x[None, :n]), lengths)[0] for x in (wav, quiet))
    cos = torch.nn.functional.cosine_similarity(e_wav, e_quiet, dim=-1)
    assert cos.mean() > 0.97, cos.mean()
    plain = build_model("sync", 610, 42).eval()
    with torch.no_grad():
        p_wav, p_quiet = (plain.encode_audio(torch.from_numpy(x[None, :n]), lengths)[0] for x in (wav, quiet))
    assert torch.nn.functional.cosine_similarity(p_wav, p_quiet, dim=-1).mean() < cos.mean()


def test_re_recording_covers_what_a_low_bit_rate_mp3_does(versions):
    """mp3 at 24 kbit/s empties the upper bands; the training augmentation makes clips like that
    (upper bands at the floor) from clean ones, and keeps the lower bands' timing."""
    wav, mp3 = versions["wav"], versions["mp3-24k"]
    n = min(len(wav), len(mp3))
    cut_in_mp3 = (wav[:n, :40] - mp3[:n, :40]).mean(0) > 1.0  # bands the codec emptied
    assert cut_in_mp3[-4:].all() and not cut_in_mp3[:30].any()  # above ~5.8 kHz
    extractor = get_extractor("default")
    rng = np.random.default_rng(0)
    augmented = [extractor.augment_audio(wav, rng) for _ in range(40)]
    band_cut = [a for a in augmented if (a[:, 36:40] < -0.9).all()]  # top bands near the floor
    assert 5 <= len(band_cut) <= 35  # some clips, not all
    onset = wav[:, 40]
    for a in band_cut:  # the events are still where they were
        assert np.corrcoef(a[:, 40], onset)[0, 1] > 0.5
