"""A trained run as one file: the model (registry name + config + weights), the feature
statistics it was trained with and the extractor that made its features.

Checkpoints hold only tensors and plain values and load with ``torch.load(weights_only=True)``,
so a downloaded checkpoint cannot run code; the schema is checked before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avmatch import __version__
from avmatch.atomic import atomic_path
from avmatch.errors import AvmatchError
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
    extractor: dict = field(default_factory=dict)
    video_rate_hz: float = 1.0
    audio_rate_hz: float = 1.0
    extra: dict = field(default_factory=dict)  # training state for --resume: optimizer, epoch, ...

    def standardise(self, x: np.ndarray, modality: str) -> np.ndarray:
        mean, std = (self.video_mean, self.video_std) if modality == "video" else (self.audio_mean, self.audio_std)
        return ((x - mean) / std).astype(np.float32)

    def save(self, path: str | Path) -> None:
        state = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "avmatch_version": __version__,
            "model": self.model.name,
            "model_config": dict(self.model.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "stats": {k: torch.from_numpy(np.asarray(getattr(self, k), dtype=np.float32))
                      for k in ("video_mean", "video_std", "audio_mean", "audio_std")},
            "extractor": self.extractor,
            "rates": {"video_hz": float(self.video_rate_hz), "audio_hz": float(self.audio_rate_hz)},
            "extra": self.extra,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)


def feature_stats(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all rows of all clips (std floored to avoid division by 0)."""
    rows = np.concatenate(arrays, axis=0).astype(np.float64)
    return rows.mean(0).astype(np.float32), np.maximum(rows.std(0), 1e-4).astype(np.float32)


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> Trained:
    """Load a checkpoint file, or the best checkpoint of a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.exists():
        raise AvmatchError("no such checkpoint (give a run folder or a .pt file)", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and unpickler errors all mean the same to a user
        raise AvmatchError(f"not a loadable avmatch checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]})", path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AvmatchError("not an avmatch checkpoint", path)
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise AvmatchError(f"checkpoint format {state['format_version']} is newer than this avmatch reads ({FORMAT_VERSION}); upgrade avmatch", path)
    config = dict(state["model_config"])
    video_dim, audio_dim = config.pop("video_dim"), config.pop("audio_dim")
    model = build_model(state["model"], video_dim, audio_dim, **config)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise AvmatchError(f"weights do not fit model {state['model']!r}: {str(err).splitlines()[0][:160]}", path) from None
    model.to(device).eval()
    stats = {k: v.numpy() for k, v in state["stats"].items()}
    return Trained(model, **stats, extractor=state.get("extractor", {}),
                   video_rate_hz=state["rates"]["video_hz"], audio_rate_hz=state["rates"]["audio_hz"],
                   extra=state.get("extra", {}))
