"""The settings of a training run: one dataclass, every value checked in range when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from avmatch.errors import AvmatchError


@dataclass
class TrainConfig:
    model: str = "dual"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    clip_grad: float = 1.0  # max gradient norm; 0 turns clipping off
    window_s: float = 0.0  # length of the random training window; 0 = whole clip
    val_fraction: float = 0.15
    patience: int = 8  # epochs without a better validation top-1 before stopping
    negatives: int = 3  # mismatched pairs per matched pair, for pair losses
    max_shift_s: float = -1.0  # timing models: random audio shift in training; -1 = half the lag range
    seed: int = 0
    histograms: bool = True
    histogram_steps: int = 0  # diagnostics (weights, grads, each layer's outputs) every N steps; 0: once per epoch
    optimizer: str = "adamw"  # "adamw" (decoupled weight decay) or "adam" (plain Adam, no weight decay)
    schedule: str = "cosine"  # learning rate over the epochs: "cosine" (annealed to 0) or "constant"
    init: str = ""  # start from this run / checkpoint (or "default", the shipped model): fine-tuning
    augment: float = 0.8  # share of training clips whose audio is re-recorded (codec, level, noise); 0: none
    centre_clips: bool = False  # take each clip's mean over time from its inputs (both modalities) before the z-scores
    model_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every value in its range, refused in one line naming it (the CLI and the API build this)."""
        for name, (kind, lo, hi, rule) in _TRAIN_BOUNDS.items():
            value = getattr(self, name)
            ok = isinstance(value, kind) and not isinstance(value, bool) and (
                isinstance(value, int) or math.isfinite(value)) and lo <= value <= hi
            if not ok:
                raise AvmatchError(f"training option {name} is {value!r}: {rule}")
        for name in ("histograms", "centre_clips"):
            if not isinstance(getattr(self, name), bool):
                raise AvmatchError(f"training option {name} is {getattr(self, name)!r}: give true or false")
        for name, known in (("optimizer", ("adamw", "adam")), ("schedule", ("cosine", "constant"))):
            if getattr(self, name) not in known:
                raise AvmatchError(f"training option {name} is {getattr(self, name)!r}: give {' or '.join(known)}")
        if not isinstance(self.model_options, dict):
            raise AvmatchError(f"training option model_options is {self.model_options!r}: give a dict")


# name: (type, lowest, highest, the rule as a user reads it)
_TRAIN_BOUNDS = {
    "epochs": (int, 1, 100_000, "give a whole number of epochs, at least 1"),
    "batch_size": (int, 1, 1 << 20, "give a whole number of clips, at least 1"),
    "lr": ((int, float), 1e-12, 10.0, "give a learning rate above 0 and at most 10"),
    "weight_decay": ((int, float), 0.0, 10.0, "give 0 to 10"),
    "clip_grad": ((int, float), 0.0, 1e6, "give a gradient norm, 0 (no clipping) or more"),
    "window_s": ((int, float), 0.0, 1e6, "give seconds, 0 (whole clip) or more"),
    "val_fraction": ((int, float), 0.0, math.nextafter(1.0, 0.0), "give 0 to below 1"),
    "patience": (int, 0, 100_000, "give a whole number of epochs, 0 or more"),
    "negatives": (int, 1, 1000, "give a whole number, at least 1"),
    "max_shift_s": ((int, float), -1.0, 1e5, "give seconds, or -1 for half the lag range"),
    "seed": (int, 0, 2**63 - 1, "give a whole number, 0 or more"),
    "histogram_steps": (int, 0, 1 << 30, "give a whole number of steps, 0 or more"),
    "augment": ((int, float), 0.0, 1.0, "give a share from 0 to 1"),
}

