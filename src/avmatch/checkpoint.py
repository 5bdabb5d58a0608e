"""A trained run as one file: the model (registry name + config + weights), the feature
statistics it was trained with and the extractor that made its features.

Checkpoints hold only tensors and plain values and load with ``torch.load(weights_only=True)``,
so a downloaded checkpoint cannot run code; the schema is checked before anything is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avmatch import __version__
from avmatch.atomic import atomic_path
from avmatch.errors import AvmatchError
from avmatch.features.record import ExtractorRecord, check_record
from avmatch.models import build_model

FORMAT = "avmatch-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Trained:
    """A model together with everything needed to feed it new features."""

    model: nn.Module
    video_mean: np.ndarray  # (Dv,) per-dimension statistics of the training features
    video_std: np.ndarray
    audio_mean: np.ndarray  # (Da,)
    audio_std: np.ndarray
    extractor: ExtractorRecord = field(default_factory=ExtractorRecord)  # how its features were made
    video_rate_hz: float = 1.0
    audio_rate_hz: float = 1.0
    extra: dict = field(default_factory=dict)  # training state for --resume: optimizer, epoch, ...
    # the confidence's temperature (matching.dense.fit_temperature), fitted on the run's validation
    # pairs; 1.0: none fitted (the shipped model, older runs)
    temperature: float = 1.0
    # each clip's own mean over time taken away before the z-scores (TrainConfig.centre_clips): what
    # changes within a clip, not what it is throughout
    centre_clips: bool = False

    def centred(self, x: np.ndarray) -> np.ndarray:
        """``x`` less its own mean over time when the model reads clips centred (``centre_clips``)."""
        return x - x.mean(axis=0, keepdims=True) if self.centre_clips else x

    def standardise(self, x: np.ndarray, modality: str) -> np.ndarray:
        mean, std = (self.video_mean, self.video_std) if modality == "video" else (self.audio_mean, self.audio_std)
        return ((self.centred(x) - mean) / std).astype(np.float32)

    def save(self, path: str | Path, weights_dtype: torch.dtype | None = None) -> None:
        """Write the checkpoint atomically; ``weights_dtype`` (e.g. torch.float16) stores floating
        weights at that precision (they load back into the model's own dtype)."""
        state = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "avmatch_version": __version__,
            "model": self.model.name,
            "model_config": dict(self.model.config),
            "state_dict": {k: v.detach().cpu().to(weights_dtype) if weights_dtype and v.is_floating_point()
                           else v.detach().cpu() for k, v in self.model.state_dict().items()},
            "stats": {k: torch.from_numpy(np.asarray(getattr(self, k), dtype=np.float32))
                      for k in ("video_mean", "video_std", "audio_mean", "audio_std")},
            "extractor": self.extractor.to_dict(),
            "rates": {"video_hz": float(self.video_rate_hz), "audio_hz": float(self.audio_rate_hz)},
            "extra": self.extra,
            "calibration": {"temperature": float(self.temperature)},
            "input": {"centre_clips": bool(self.centre_clips)},
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)


def feature_stats(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all rows of all clips (std floored to avoid division by 0)."""
    rows = np.concatenate(arrays, axis=0).astype(np.float64)
    return rows.mean(0).astype(np.float32), np.maximum(rows.std(0), 1e-4).astype(np.float32)


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _load_fault(err: BaseException) -> str:
    """What torch.load's long weights-only message boils down to."""
    text = str(err)
    if "Weights only load failed" not in text:
        return _why(err)
    found = re.search(r"unsupported GLOBAL (\S+)", text)
    if found:
        return f"it holds Python objects ({found.group(1)}), which could run code when loaded: refused"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return f"not a torch file of tensors and plain values ({found.group(1).strip()[:80] if found else 'unpickling refused'})"


def _listed(names: list[str], most: int = 3) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _is_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


# Bounds on model_config values, checked before anything is built: a config is data from a stranger.
MAX_DIM = 1 << 16  # any size (dims, hidden units, channels)
COUNT_BOUNDS = {"layers": 64, "blocks": 64, "max_lag": 30000}  # lag frames: 20 minutes at 25 Hz
MAX_LIST = 64
MAX_FLOAT = 1e6


def _check_config_values(config: dict, fail) -> None:
    """Every model_config value is a small plain value: a bounded whole number, a finite number, a
    short string, or a short list of those."""
    def check(key: str, value: object) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int):
            top = COUNT_BOUNDS.get(key, MAX_DIM)
            if not 0 <= value <= top:
                fail(f"malformed checkpoint: model_config's {key} is {value}, outside [0, {top}]")
        elif isinstance(value, float):
            if not abs(value) <= MAX_FLOAT:
                fail(f"malformed checkpoint: model_config's {key} is {value!r:.40}, not a finite number "
                     f"within ±{MAX_FLOAT:g}")
        elif isinstance(value, str):
            if len(value) > 64:
                fail(f"malformed checkpoint: model_config's {key} is a string of {len(value)} characters")
        elif isinstance(value, (list, tuple)) and len(value) <= MAX_LIST:
            for item in value:
                if isinstance(item, (list, tuple, dict)):
                    fail(f"malformed checkpoint: model_config's {key} nests lists")
                check(key, item)
        else:
            fail(f"malformed checkpoint: model_config's {key} is a {type(value).__name__}"
                 f"{f' of {len(value)} items' if hasattr(value, '__len__') else ''}, not a plain value")

    for key, value in config.items():
        check(key, value)


def _check_schema(state: object, path: Path) -> None:
    """Everything :func:`load_trained` uses, checked before any of it is used: one line per fault."""
    from avmatch.models import list_models

    def fail(message: str):
        raise AvmatchError(message, path)

    if not isinstance(state, dict):
        fail(f"not an avmatch checkpoint (a torch file holding a {type(state).__name__})")
    if state.get("format") != FORMAT:
        if state and all(torch.is_tensor(v) for v in state.values()):
            fail("not an avmatch checkpoint but a bare state_dict (weights without the model's name and "
                 "config); avmatch reads the runs `avmatch train` writes")
        fail(f"not an avmatch checkpoint (its 'format' is {state.get('format')!r:.40}, not {FORMAT!r})")
    version = state.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        fail(f"malformed checkpoint: format_version is {version!r:.40}, not a whole number")
    if version > FORMAT_VERSION:
        fail(f"checkpoint format {version} is newer than this avmatch reads ({FORMAT_VERSION}); "
             f"it was written by avmatch {state.get('avmatch_version', '?')!s:.20}: upgrade avmatch")
    name = state.get("model")
    known = [m.name for m in list_models()]
    if not isinstance(name, str) or name not in known:
        fail(f"checkpoint of model {name!r:.40}, which this avmatch does not have (it has: {', '.join(known)}); "
             "a newer avmatch or another program wrote it")
    config = state.get("model_config")
    if config is None:
        fail("malformed checkpoint: no model_config")
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        fail(f"malformed checkpoint: model_config is a {type(config).__name__}, not a table of options")
    for key in ("video_dim", "audio_dim"):
        if not _is_count(config.get(key)):
            fail(f"malformed checkpoint: model_config's {key} is {config.get(key)!r:.40}, not a positive whole number")
    _check_config_values(config, fail)
    weights = state.get("state_dict")
    if not isinstance(weights, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        fail("malformed checkpoint: state_dict is not a table of named tensors")
    stats = state.get("stats")
    if not isinstance(stats, dict):
        fail("malformed checkpoint: no feature statistics (stats)")
    for key in ("video_mean", "video_std", "audio_mean", "audio_std"):
        x, dim = stats.get(key), config[key.split("_")[0] + "_dim"]
        if not torch.is_tensor(x) or tuple(x.shape) != (dim,) or not x.is_floating_point():
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            fail(f"malformed checkpoint: stats {key} should be {dim} floats, got {got}")
        if not torch.isfinite(x).all() or (key.endswith("std") and not (x > 0).all()):
            fail(f"malformed checkpoint: stats {key} holds NaN, inf{' or values <= 0' if key.endswith('std') else ''}")
    rates = state.get("rates")
    if not isinstance(rates, dict):
        fail("malformed checkpoint: no feature rates (rates)")
    for key in ("video_hz", "audio_hz"):
        rate = rates.get(key)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < float("inf"):
            fail(f"malformed checkpoint: rates {key} is {rate!r:.40}, not a positive number")
    for key in ("extractor", "extra", "calibration", "input"):
        if not isinstance(state.get(key, {}), dict):
            fail(f"malformed checkpoint: {key} is a {type(state[key]).__name__}, not a table")
    temperature = state.get("calibration", {}).get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
        fail(f"malformed checkpoint: calibration temperature is {temperature!r:.40}, not a positive number")
    if not isinstance(state.get("input", {}).get("centre_clips", False), bool):
        fail(f"malformed checkpoint: input centre_clips is {state['input']['centre_clips']!r:.40}, not true or false")
    check_record(state.get("extractor", {}), fail, MAX_LIST, MAX_FLOAT)


def _check_weights(model: nn.Module, weights: dict, name: str, path: Path) -> None:
    """The saved tensors are exactly the ones the rebuilt model has, with the same shapes, all finite."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = ([f"{len(missing)} missing ({_listed(missing)})"] if missing else []) + \
                ([f"{len(unexpected)} unknown ({_listed(unexpected)})"] if unexpected else [])
        raise AvmatchError(f"weights do not fit model {name!r}: {'; '.join(parts)}; a checkpoint of another "
                           "model or version?", path)
    for k, v in expected.items():
        if tuple(weights[k].shape) != tuple(v.shape):
            raise AvmatchError(f"weights do not fit model {name!r}: {k} has shape {tuple(weights[k].shape)}, "
                               f"the model's is {tuple(v.shape)}", path)
        if weights[k].is_floating_point() and not torch.isfinite(weights[k]).all():
            raise AvmatchError(f"weight {k} holds NaN or inf: the run diverged or the file is damaged", path)


def _build_checked(state: dict, path: Path) -> nn.Module:
    """The model a checkpoint describes, built only once its weights are known to fit.

    The model is first built from fake tensors (shapes without memory), its tensors compared with
    the file's, and only then built for real: so a config whose model would be far larger than the
    weights in the file (``hidden=4000`` in a 37 KB file) is refused before it costs memory or time."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # torch's own shape-only tensors

    config = dict(state["model_config"])
    video_dim, audio_dim = config.pop("video_dim"), config.pop("audio_dim")
    name = state["model"]
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            shapes = build_model(name, video_dim, audio_dim, **config)
    except (AvmatchError, TypeError, ValueError, RuntimeError) as err:  # build_model's own line names no file
        raise AvmatchError(f"its model_config does not fit model {name!r}: a checkpoint of another "
                           f"model or version? ({_why(err)})", path) from None
    _check_weights(shapes, state["state_dict"], name, path)
    del shapes
    try:
        model = build_model(name, video_dim, audio_dim, **config)
        model.load_state_dict(state["state_dict"])
    except (AvmatchError, TypeError, ValueError, RuntimeError) as err:
        raise AvmatchError(f"weights do not fit model {name!r}: {_why(err)}", path) from None
    return model


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: "auto" or None is CUDA where present, else the CPU; "cpu", "cuda",
    "cuda:1" as said, a CUDA device this machine does not have being one line."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise AvmatchError(f"unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and (not torch.cuda.is_available()
                                  or (chosen.index or 0) >= torch.cuda.device_count()):
        raise AvmatchError(f"device {str(device)!r} asked for, but this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s); use --device cpu")
    if chosen.type not in ("cpu", "cuda"):
        raise AvmatchError(f"device {str(device)!r} is not supported; use auto, cpu, cuda or cuda:N")
    return chosen


def load_trained(path: str | Path, device: str | torch.device | None = "cpu") -> Trained:
    """Load a checkpoint file, or the best checkpoint of a run folder.

    ``torch.load(weights_only=True)`` unpickles tensors and plain values only, never code; then the
    schema (format, version, model name, config, statistics, rates) and every weight's name and
    shape against the rebuilt model are checked before the model is used. Each fault is one line."""
    import warnings

    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.is_file():
        raise AvmatchError("no such checkpoint (give a run folder or a .pt file)", path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols on stderr: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and unpickler errors all mean the same to a user
        raise AvmatchError(f"not a loadable avmatch checkpoint ({_load_fault(err)})", path) from None
    _check_schema(state, path)
    model = _build_checked(state, path)
    model.to(resolve_device(device)).eval()
    stats = {k: state["stats"][k].float().numpy() for k in ("video_mean", "video_std", "audio_mean", "audio_std")}
    return Trained(model, **stats, extractor=ExtractorRecord.from_dict(state.get("extractor", {})).without_files(),
                   video_rate_hz=float(state["rates"]["video_hz"]), audio_rate_hz=float(state["rates"]["audio_hz"]),
                   extra=state.get("extra", {}), temperature=float(state.get("calibration", {}).get("temperature", 1.0)),
                   centre_clips=state.get("input", {}).get("centre_clips", False))
