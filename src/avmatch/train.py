"""The one training loop every model uses. Models differ by their score and loss, not by loops.

A run folder holds ``config.json``, ``last.pt`` (every epoch, for ``--resume``), ``best.pt`` (best
validation top-1, what ``avmatch match`` uses), ``metrics.json`` and TensorBoard events in ``tb/``.

Under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set) the same loop trains with DistributedDataParallel:
every process builds the same global batch and encodes its own rows of it, the encodings are
all-gathered so the loss sees the whole global batch's negatives, and rank 0 alone validates and
writes the run folder. ``batch_size`` is the global batch, so N processes follow the 1-process run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from avmatch import losses
from avmatch.atomic import write_text
from avmatch.checkpoint import Trained, feature_stats, load_trained, resolve_device
from avmatch.corpus import Clip, Corpus
from avmatch.errors import AvmatchError
from avmatch.features.record import ExtractorRecord
from avmatch.inference import check_fits, pad_batch, score_matrix
from avmatch.matching.dense import fit_temperature
from avmatch.metrics import retrieval_metrics
from avmatch.models import build_model, capabilities, model_entry
from avmatch.models.base import parameter_table
from avmatch.progress import bar as progress_bar
from avmatch.shipped import model_path


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


# the university report's training of its lstm-cnn, exactly where it says and plainly where it does not:
# a ReLU after each residual sum, BCE on one mismatched pair per matched pair, plain Adam at a constant rate
_REPORT_TRAINING = {"optimizer": "adam", "schedule": "constant", "lr": 1e-3, "negatives": 1}
# Settings that suit a model better than TrainConfig's general defaults, applied whenever that model
# is trained (the CLI, the API, the demo and the shipped model's build); what a caller gives wins.
RECIPES: dict[str, dict] = {
    # the report's model and training (``--recipe report``; README "The report's recipe"): the two
    # sequences concatenated, diagnostics every 10 steps (every step cost twice the training on 120 s clips)
    "report": {"model": "lstm-cnn", **_REPORT_TRAINING, "histogram_steps": 10,
               "model_options": {"interleave": False, "residual_relu": True}},
    # lstm-cnn trains the report's way, its two sequences interleaved: top-5 of 30 0.978 vs 0.911 with
    # AdamW + cosine at 2e-3 and three mismatched pairs (benchmarks/compare_models.py, README)
    "lstm-cnn": {**_REPORT_TRAINING, "model_options": {"residual_relu": True}},
    # the shipped model's recipe, measured by benchmarks/generalise.py: level-free audio, 3 s windows
    # with the audio shifted by up to 1 s, offsets searched within 32 frames (1.28 s at 25 Hz)
    "sync": {"epochs": 16, "batch_size": 48, "window_s": 3.0, "max_shift_s": 1.0,
             "model_options": {"max_lag": 32, "hidden": 128, "embed_dim": 64, "init_scale": 50.0, "audio_centre": 25}},
    # one row a second that carries the second's timing inside it (the classic extractor): the sync model
    # comparing the rows second by second, each row on its own (kernel 1), less each clip's look and
    # level (both towers centred over 25 s); aligned clips only (no lag: a second is too coarse for one).
    # Four families never trained on, every audio format: one-to-one 1.000 where dual gets 0.017 and
    # lstm-cnn 0.033 (benchmarks/compare_models.py --media; README "Models")
    "seconds": {"model": "sync", "epochs": 20, "batch_size": 48, "window_s": 12.0,
                "model_options": {"max_lag": 0, "kernel": 1, "hidden": 128, "embed_dim": 64, "init_scale": 50.0,
                                  "audio_centre": 25, "video_centre": 25}},
}
# Fine-tuning (``init``): the started model's recipe, then these (benchmarks/generalise.py's fine-tuned arm)
FINE_TUNE = {"lr": 1e-3, "epochs": 8, "patience": 8}


def clear_gain(top1: float, n: int) -> float:
    """How far a fine-tuned model's validation top-1 must rise above the started model's to replace it:
    one standard error of the started model's top-1 on ``n`` clips, and at least one clip. On 96 clips
    at 0.93 that is 0.027: two clips more right is what another draw of the same clips could give."""
    return max(1.0 / max(n, 1), math.sqrt(top1 * (1.0 - top1) / max(n, 1)))


def _beats(metrics: dict, state: dict) -> bool:
    """Whether this epoch's validation replaces the best so far: a better (top-1, MRR); while the
    started model's weights are the best (a fine-tune's epoch 0), a top-1 higher by :func:`clear_gain`."""
    if state.get("best_epoch") == 0 and "start" in state:
        return metrics["top1"] > state["start"]["top1"] + clear_gain(state["start"]["top1"], metrics["n"])
    return (metrics["top1"], metrics["mrr"]) > (state["best_top1"], state["best_mrr"])


def recipe(name: str, **given) -> TrainConfig:
    """The TrainConfig of a recipe: TrainConfig's defaults, then ``RECIPES[name]`` (a model's own
    recipe is under the model's name; a named one such as "report" names its model), then ``given``
    (its ``model_options`` merged over the recipe's). Fine-tuning (``init`` given, no name): the
    started model's recipe with :data:`FINE_TUNE` over it."""
    base = dict(RECIPES.get(name, {}))
    model = base.pop("model", name)
    if given.get("init") and not model:
        model = load_trained(model_path(given["init"])).model.name
        base = {**RECIPES.get(model, {}), **FINE_TUNE}
    options = {**base.pop("model_options", {}), **(given.pop("model_options", None) or {})}
    return TrainConfig(model=model, **{**base, **given}, model_options=options)


def choose_model(corpus: Corpus) -> str:
    """The model (or recipe) that suits a corpus when the user names none: the one its extractor names
    (:attr:`avmatch.features.record.ExtractorRecord.recipe`), else the timing-aware one for frame-rate features
    (several rows a second, both modalities at one rate), else the embedding model."""
    suited = ExtractorRecord.from_dict(corpus.extractor).recipe
    if suited:
        return suited
    if corpus.video_rate_hz == corpus.audio_rate_hz and corpus.video_rate_hz >= 5:
        return "sync"
    return "dual"


def choose_start(corpus: Corpus, model: str = "", init: str = "", recipe: str = "") -> tuple[str, str]:
    """The (model, init) to train: what the user named, else the shipped model fine-tuned where it
    fits the corpus (its extractor, dims and rates), else :func:`choose_model`'s from scratch.
    ``init="none"`` asks for scratch."""
    if init == "none":
        return model or ("" if recipe else choose_model(corpus)), ""
    if model or init or recipe:
        return model, init
    return ("", "default") if _shipped_fits(corpus) else (choose_model(corpus), "")


def _shipped_fits(corpus: Corpus) -> bool:
    try:
        shipped = load_trained(model_path("default"))
        for modality in ("video", "audio"):
            check_fits(shipped, corpus, modality)
    except AvmatchError:  # no shipped model, or features it was not trained on
        return False
    return True


def _initial(config: TrainConfig, corpus: Corpus) -> Trained:
    """The checkpoint ``config.init`` names, checked to fit the corpus; sets ``config.model`` and
    ``config.model_options`` to its own (a fine-tuned model keeps its architecture)."""
    start = load_trained(model_path(config.init))
    for modality in ("video", "audio"):  # the dims, rates and extractor match refuses, for a corpus too
        check_fits(start, corpus, modality)
    if config.model and config.model != start.model.name:
        raise AvmatchError(f"--init {config.init} holds a {start.model.name!r} model, not {config.model!r}; "
                           "leave out --model to fine-tune it")
    config.model = start.model.name
    config.model_options = {k: v for k, v in start.model.config.items() if k not in ("video_dim", "audio_dim")}
    return start


def _augmenter(extractor: ExtractorRecord):
    """The extractor that made a corpus, which knows how to re-record its audio features; None when
    the corpus came from elsewhere (course features, an extractor this avmatch does not have)."""
    try:
        return extractor.build()
    except (AvmatchError, TypeError, ValueError):
        return None


def _windows(clips: list[Clip], window_s: float, rates: tuple[float, float], rng: np.random.Generator,
             max_shift_s: float = 0.0):
    """A random window of each clip: video seconds [t0, t0 + w), audio [t0 + d, t0 + d + w).

    The shift d is drawn in ±max_shift_s (0: aligned windows). Returns the video windows, the
    audio windows and each shift in audio rows (the audio's true lag is minus that).
    """
    videos, audios, shifts = [], [], []
    for c in clips:
        dur_s = min(len(c.video) / rates[0], len(c.audio) / rates[1])
        shift_s = rng.uniform(-max_shift_s, max_shift_s) if max_shift_s > 0 else 0.0
        shift_s = float(np.clip(shift_s, -dur_s / 2, dur_s / 2))
        shift_s = round(shift_s * rates[1]) / rates[1]  # whole rows, so the target lag is exact
        room = dur_s - abs(shift_s)
        w = room if window_s <= 0 else min(window_s, room)
        lo = max(0.0, -shift_s)
        t0 = rng.uniform(lo, lo + room - w) if room > w else lo
        for arr, rate, start, out in ((c.video, rates[0], t0, videos), (c.audio, rates[1], t0 + shift_s, audios)):
            i0 = int(round(start * rate))
            out.append(arr[i0 : max(i0 + 1, i0 + int(round(w * rate)))])
        shifts.append(int(round(shift_s * rates[1])))
    return videos, audios, shifts


@dataclass(frozen=True)
class _Shard:
    """Under DDP, the rows of a global batch of ``n`` clips that process ``rank`` of ``world`` encodes:
    contiguous, as even as can be (the first ``n % world`` processes take one more)."""

    rank: int
    world: int
    n: int

    @property
    def sizes(self) -> list[int]:
        return [self.n // self.world + (r < self.n % self.world) for r in range(self.world)]

    @property
    def rows(self) -> slice:
        lo = sum(self.sizes[: self.rank])
        return slice(lo, lo + self.sizes[self.rank])

    def gather(self, x: Tensor) -> Tensor:
        """This process's rows (b, ...) -> the global batch's (n, ...); gradients flow back to each
        row's process (the backward sums what every process's loss asks of that row)."""
        # what torch 2.13 names in place of the deprecated torch.distributed.nn.functional.all_gather
        from torch.distributed._functional_collectives import all_gather_single_autograd

        m = max(self.sizes)  # the gather wants one shape everywhere: pad with zero rows, then drop them
        full = all_gather_single_autograd(torch.cat([x, x.new_zeros((m - len(x), *x.shape[1:]))]), 0,
                                          dist.group.WORLD)  # (world * m, ...)
        return torch.cat([full[r * m : r * m + k] for r, k in enumerate(self.sizes)])

    def mean(self, terms: dict) -> dict:
        """The mean over processes of each (detached) loss term: the global batch's loss, for logs."""
        values = torch.stack([t.detach() for t in terms.values()])
        dist.all_reduce(values)
        return dict(zip(terms, values / self.world, strict=True))


def _step_loss(model: nn.Module, v, v_len, a, a_len, shifts: list[int], negatives: int,
               rng: np.random.Generator, shard: _Shard | None = None) -> dict:
    if shard is None:
        ev, ea = model.encode_video(v, v_len), model.encode_audio(a, a_len)
    else:
        # Each process encodes its rows of the global batch (v, a) and gathers everyone's. Embedding
        # and timing losses are then the global batch's loss on every process; the gather's backward
        # sums world identical gradients per row and DDP divides by world: the 1-process gradient.
        rows = shard.rows
        ev = shard.gather(model.encode_video(v[rows], v_len[rows]))
        ea = shard.gather(model.encode_audio(a[rows], a_len[rows]))
    b = v.shape[0]
    # under DDP a process scores the pairs of its own videos, negatives drawn from the global batch
    own = None if shard is None else torch.arange(b)[shard.rows]
    objective = losses.objective(model.loss)
    terms = objective.terms(model, ev, ea, v_len, a_len, losses.Batch(shifts, negatives, rng, own))
    if shard is not None and objective.pairwise:
        # the terms are means over this process's share of the pairs; share * world makes DDP's
        # average of the gradients the 1-process gradient
        terms = {k: t * (len(own) * shard.world / b) for k, t in terms.items()}
    return terms


class _Step(nn.Module):
    """The training step's loss as a module. DistributedDataParallel averages the gradients of what
    runs inside its forward(), and a step calls encode_*/score_* rather than the model's forward, so
    the step itself is what DDP wraps (no hand-written all-reduce, and DDP overlaps it with backward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return _step_loss(self.model, *args)


def _distributed(device: str | torch.device | None) -> tuple[int, int, torch.device, bool]:
    """Rank, world size and device from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), and
    whether this call started the process group (nccl on GPUs, gloo on CPU). Outside torchrun, or
    with one process: rank 0 of 1 and nothing is started."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(device), False
    device = resolve_device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)  # one GPU per process
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, started


def _optimiser(model: nn.Module, config: TrainConfig):
    """The optimiser and learning-rate schedule ``config`` names."""
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        raise AvmatchError(f"unknown optimizer {config.optimizer!r}; use adamw or adam")
    if config.schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs))
    if config.schedule == "constant":
        return optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    raise AvmatchError(f"unknown schedule {config.schedule!r}; use cosine or constant")


def validate(trained: Trained, val: Corpus) -> tuple[dict, np.ndarray]:
    scores = score_matrix(trained, [c.video for c in val.clips], [c.audio for c in val.clips])
    return retrieval_metrics(scores), scores


def _log_layers(writer, model: nn.Module, trained: Trained, val: Corpus, step: int) -> None:
    """The report's diagnostics of every layer, one tag each: weights, gradients, and outputs (on up
    to 16 validation clips)."""
    for name, p in model.named_parameters():
        writer.add_histogram(f"weights/{name}", p.detach().cpu(), step)
        if p.grad is not None:
            writer.add_histogram(f"grads/{name}", p.grad.detach().cpu(), step)
    hooks = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            def hook(_m, _i, out, name=name):
                out = out[0] if isinstance(out, tuple) else out
                if isinstance(out, torch.nn.utils.rnn.PackedSequence):
                    out = out.data
                if torch.is_tensor(out):
                    writer.add_histogram(f"outputs/{name}", out.detach().float().cpu(), step)
            hooks.append(mod.register_forward_hook(hook))
    clips = val.clips[: min(16, len(val.clips))]
    try:
        score_matrix(trained, [c.video for c in clips], [c.audio for c in clips])
    finally:
        for h in hooks:
            h.remove()


def _log_scores(writer, model: nn.Module, scores: np.ndarray, step: int) -> None:
    """Matched vs mismatched validation scores (probabilities for a logit model): they should split."""
    prob = 1 / (1 + np.exp(-scores)) if losses.objective(model.loss).logits else scores
    eye = np.eye(len(scores), dtype=bool)
    writer.add_histogram("scores/matched", prob[eye], step)
    writer.add_histogram("scores/mismatched", prob[~eye], step)


def _log_heatmap(writer, scores: np.ndarray, step: int, most: int = 64) -> None:
    """The validation score matrix as an image (up to ``most`` clips): a clear diagonal is a model
    that matches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = scores[:most, :most]
    fig, ax = plt.subplots(figsize=(4, 3.4))
    im = ax.imshow(shown, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="score")
    ax.set(xlabel="audio", ylabel="video", title=f"validation scores ({len(shown)} clips)")
    fig.tight_layout()
    writer.add_figure("val/heatmap", fig, step)  # closes the figure


def launch_processes(processes: int, argv: list[str]) -> None:
    """Run ``python -m avmatch ARGV`` as ``processes`` DDP processes on this machine, as
    ``torchrun --standalone --nproc-per-node N -m avmatch ARGV`` does (a free port is chosen)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", "--nproc-per-node", str(processes), "-m", "avmatch", *argv])
    except ChildFailedError:
        raise AvmatchError(f"a training process of {processes} failed (its error is above)") from None


RUN_FILES = ("config.json", "best.pt", "last.pt", "metrics.json", "tb")  # what a run folder holds


def _claim_run_dir(run_dir: Path, force: bool, clear: bool) -> None:
    """A new run goes into an empty (or new) folder: a finished model is never silently replaced, nor
    TensorBoard events of two runs mixed. ``force`` clears a previous run first (when ``clear``: the
    process that writes), but never a folder holding files a run does not write."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise AvmatchError("the run folder is a file", run_dir)
    present = sorted(p.name for p in run_dir.iterdir())
    if not present:
        return
    foreign = [n for n in present if n not in RUN_FILES and not (n.startswith(".") and ".tmp" in n)]
    if foreign:
        raise AvmatchError(f"the run folder holds files a run does not write ({', '.join(foreign[:3])}"
                           f"{' ...' if len(foreign) > 3 else ''}); give a new or empty folder", run_dir)
    # a folder without a checkpoint or metrics holds a run killed before its first epoch: nothing to lose
    if not force and {"last.pt", "best.pt", "metrics.json"} & set(present):
        raise AvmatchError(f"the run folder already holds a run ({', '.join(present)}); continue it with "
                           "--resume (in Python: resume=True), replace it with --force (force=True), or give a new "
                           "folder", run_dir)
    if clear:
        import shutil

        for name in present:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def saved_config(run_dir: str | Path) -> TrainConfig:
    """The training config of the run in ``run_dir``, to resume it: one line when there is none."""
    run_dir = Path(run_dir)
    if not (run_dir / "last.pt").is_file():
        raise AvmatchError("nothing to resume: no last.pt", run_dir)
    try:
        return TrainConfig(**json.loads((run_dir / "config.json").read_text())["train"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise AvmatchError(f"cannot resume: config.json is missing or not one avmatch train wrote "
                           f"({type(err).__name__}: {str(err)[:80]})", run_dir) from None


def check_resume_settings(run_dir: str | Path, asked: dict) -> None:
    """A resumed run goes on as it was started: settings asked for that differ from the run's (more
    epochs, another learning rate ...) are refused in one line, never silently ignored. The model
    and its start are checked once the recipe is resolved (:func:`_resumable`)."""
    saved = saved_config(run_dir)
    options = asked.get("model_options") or {}
    changed = [f"{k} {getattr(saved, k)!r} there, {v!r} asked" for k, v in asked.items()
               if k not in ("model", "init", "model_options") and hasattr(saved, k) and getattr(saved, k) != v]
    changed += [f"model option {k} {saved.model_options.get(k)!r} there, {v!r} asked" for k, v in options.items()
                if saved.model_options.get(k) != v]
    if changed:
        raise AvmatchError(f"--resume (resume=True) goes on with the run as it was started ({'; '.join(changed)}); "
                           f"to change that, train a new run (another folder, or --force / force=True)", run_dir)


def _resumable(run_dir: Path, config: TrainConfig, corpus: Corpus) -> TrainConfig:
    """The saved training config of a run to resume, once its folder is known to hold a whole run of
    this model on features like the corpus's: a torn or foreign folder is one line."""
    saved = saved_config(run_dir)
    if saved.model != config.model:
        raise AvmatchError(f"run was trained with model {saved.model!r}, not {config.model!r}", run_dir)
    last = load_trained(run_dir / "last.pt")
    extra = last.extra
    if not all(isinstance(extra.get(k), dict) for k in ("optimizer", "scheduler", "state")) or \
            not isinstance(extra["state"].get("epoch"), int) or not isinstance(extra["state"].get("history"), list):
        raise AvmatchError("cannot resume: last.pt holds no training state (a best.pt or another program's "
                           "checkpoint copied there?)", run_dir / "last.pt")
    groups = extra["optimizer"].get("param_groups")
    counts = sum(len(g.get("params", [])) for g in groups) if isinstance(groups, list) and \
        all(isinstance(g, dict) for g in groups) else -1
    if last.model.name != saved.model or counts != len(list(last.model.parameters())):
        raise AvmatchError("cannot resume: last.pt's optimizer state does not fit its model", run_dir / "last.pt")
    paired = corpus.paired()
    for modality in ("video", "audio"):
        have, want = getattr(paired, f"{modality}_dim"), last.model.config[f"{modality}_dim"]
        if have != want:
            raise AvmatchError(f"cannot resume: the run was trained on {want}-dim {modality} features, this "
                               f"corpus has {have}: another corpus?", run_dir)
    return saved


@contextlib.contextmanager
def _quiet_event_threads():
    """TensorBoard writes events from a thread of its own; when that write fails (a full disk) the
    thread prints a traceback, and the error reaches the loop at the next event as an OSError (one
    line from the CLI). The traceback is what this silences."""
    import threading

    before = threading.excepthook

    def hook(args):
        if type(args.thread).__module__.startswith("tensorboard") and issubclass(args.exc_type, OSError):
            return
        before(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = before


def train(corpus: Corpus, run_dir: str | Path, config: TrainConfig, resume: bool = False,
          device: torch.device | None = None, progress: bool = True, force: bool = False) -> dict:
    """Train ``config.model`` on the paired clips of ``corpus``; returns the final metrics.

    ``run_dir`` must be new or empty, unless ``resume`` (continue the run in it) or ``force``
    (clear the previous run in it first)."""
    with _quiet_event_threads(), _repeatable():
        return _train(corpus, run_dir, config, resume, device, progress, force)


@contextlib.contextmanager
def _repeatable():
    """PyTorch's deterministic kernels while training, so a seed gives the same run every time (on
    CPU some backward passes otherwise sum in a different order run to run: lstm-cnn's weights
    differed by 3e-3 after two epochs); the caller's setting comes back after."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # an op with no deterministic kernel warns, never fails
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _new_trained(config: TrainConfig, corpus: Corpus, train_set: Corpus, start: Trained | None,
                 device: torch.device) -> Trained:
    """The model to train with its input statistics (the training clips'), or, fine-tuning, the
    started model's weights and the statistics they were trained with."""
    torch.manual_seed(config.seed)
    paired = corpus.paired()
    model = build_model(config.model, paired.video_dim, paired.audio_dim, **config.model_options).to(device)
    trained = Trained(model, None, None, None, None, extractor=ExtractorRecord.from_dict(corpus.extractor),
                      video_rate_hz=corpus.video_rate_hz, audio_rate_hz=corpus.audio_rate_hz,
                      centre_clips=config.centre_clips)
    if start is not None:
        _take_weights(trained, start)
    else:
        trained.video_mean, trained.video_std = feature_stats([trained.centred(c.video) for c in train_set.clips])
        trained.audio_mean, trained.audio_std = feature_stats([trained.centred(c.audio) for c in train_set.clips])
    return trained


def _take_weights(trained: Trained, source: Trained) -> None:
    """``source``'s weights and input standardisation into ``trained`` (a fine-tune's start, a resumed run)."""
    trained.model.load_state_dict(source.model.state_dict())
    trained.video_mean, trained.video_std = source.video_mean, source.video_std
    trained.audio_mean, trained.audio_std = source.audio_mean, source.audio_std
    trained.centre_clips = source.centre_clips


def _open_run(run_dir: Path, config: TrainConfig, corpus: Corpus, train_set: Corpus, val_set: Corpus,
              device: torch.device, world: int, model: nn.Module):
    """The run folder made ready (stale temporary files gone, config.json written); its TensorBoard writer."""
    from torch.utils.tensorboard import SummaryWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp*"):  # left by a run killed while writing a checkpoint
        stale.unlink(missing_ok=True)
    write_text(run_dir / "config.json", json.dumps({
        "train": asdict(config), "corpus": str(corpus.root or ""), "extractor": corpus.extractor,
        "train_clips": len(train_set.clips), "val_clips": len(val_set.clips), "device": str(device),
        "processes": world, "parameters": sum(n for _, n in parameter_table(model)),
    }, indent=2))
    return SummaryWriter(str(run_dir / "tb"))


def _max_shift(model: nn.Module, config: TrainConfig, corpus: Corpus) -> float:
    """How far a timing model's training shifts the audio (seconds); 0 for other models."""
    if not capabilities(model).timing:
        return 0.0
    if corpus.video_rate_hz != corpus.audio_rate_hz:
        raise AvmatchError(f"model {config.model!r} needs video and audio features at one rate, "
                           f"not {corpus.video_rate_hz} and {corpus.audio_rate_hz} Hz", corpus.root)
    half = model.max_lag / corpus.audio_rate_hz / 2
    return min(config.max_shift_s, 2 * half) if config.max_shift_s >= 0 else half


def _log_step(writer, config: TrainConfig, trained: Trained, val_set: Corpus, step: int, loss: Tensor,
              grad_norm: Tensor, terms: dict[str, Tensor]) -> None:
    writer.add_scalar("loss/total", loss.item(), step)
    writer.add_scalar("grad/norm", grad_norm.item(), step)
    for k, t in terms.items():
        writer.add_scalar(f"loss/{k}", t.item(), step)
    if config.histograms and config.histogram_steps and step % config.histogram_steps == 0:
        _log_layers(writer, trained.model, trained, val_set, step)


def _end_epoch(writer, config: TrainConfig, trained: Trained, val_set: Corpus, run_dir: Path, state: dict,
               epoch: int, loss: float, optimizer, scheduler) -> None:
    """Validate after ``epoch`` (counted from 1), log it, keep best.pt when it beats the best so far
    (:func:`_beats`) and write last.pt with what --resume needs; updates ``state``."""
    model = trained.model
    metrics, scores = validate(trained, val_set)
    for k in ("top1", "top5", "mrr", "a2v_top1"):
        writer.add_scalar(f"val/{k}", metrics[k], epoch)
    writer.add_scalar("val/loss", losses.validation_loss(scores, model.loss), epoch)
    writer.add_scalar("lr", optimizer.param_groups[0]["lr"], epoch)
    if config.histograms:
        if not config.histogram_steps:  # per step instead: logged in the training loop
            _log_layers(writer, model, trained, val_set, epoch)
        _log_scores(writer, model, scores, epoch)
        _log_heatmap(writer, scores, epoch)
    state["epoch"] = epoch
    state["history"].append({"epoch": epoch, "loss": loss, **metrics})
    if _beats(metrics, state):
        state.update(best_top1=metrics["top1"], best_mrr=metrics["mrr"], bad_epochs=0, best_epoch=epoch)
        trained.extra = {}
        trained.temperature = fit_temperature(scores)  # the confidence, made honest on these pairs
        trained.save(run_dir / "best.pt")
    else:
        state["bad_epochs"] += 1
    trained.extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state}
    trained.save(run_dir / "last.pt")
    trained.extra = {}


def _train(corpus: Corpus, run_dir: str | Path, config: TrainConfig, resume: bool,
           device: torch.device | None, progress: bool, force: bool) -> dict:
    run_dir = Path(run_dir)
    rank, world, device, own_group = _distributed(device)
    main = rank == 0  # the one process that validates, logs and writes the run folder
    paired = corpus.paired()
    if len(paired.clips) < 4:
        raise AvmatchError(f"training needs at least 4 clips with both video and audio, found {len(paired.clips)}", corpus.root)
    if resume:
        config = _resumable(run_dir, config, corpus)
    else:
        _claim_run_dir(run_dir, force, clear=main)
    start = _initial(config, corpus) if config.init and not resume else None
    model_entry(config.model)  # unknown names fail before any work
    if config.batch_size < max(2, world):
        per_process = f" and one per process ({world} processes share it)" if world > 1 else ""
        raise AvmatchError(f"batch size {config.batch_size} is too small: a batch needs at least 2 clips{per_process}")
    train_set, val_set = paired.split(config.val_fraction, config.seed)
    if len(val_set.clips) < 2:
        train_set, val_set = paired, paired  # tiny corpora: validate on the training clips
    if start is None and not resume and model_entry(config.model).reads_maps and "video_maps" not in config.model_options:
        # a new model reads the extractor's maps
        config.model_options["video_maps"] = ExtractorRecord.from_dict(corpus.extractor).video_maps
    trained = _new_trained(config, corpus, train_set, start, device)
    model = trained.model
    optimizer, scheduler = _optimiser(model, config)
    state = {"epoch": 0, "best_top1": -1.0, "best_mrr": -1.0, "bad_epochs": 0, "history": []}
    if resume:
        last = load_trained(run_dir / "last.pt", device)
        _take_weights(trained, last)
        optimizer.load_state_dict(last.extra["optimizer"])
        scheduler.load_state_dict(last.extra["scheduler"])
        state = last.extra["state"]
    step_loss = partial(_step_loss, model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_loss = DistributedDataParallel(_Step(model), device_ids=[device.index] if device.type == "cuda" else None)
    writer = _open_run(run_dir, config, corpus, train_set, val_set, device, world, model) if main else None
    rates = (corpus.video_rate_hz, corpus.audio_rate_hz)
    max_shift_s = _max_shift(model, config, corpus)
    train_v = [trained.standardise(c.video, "video") for c in train_set.clips]
    train_a = [c.audio for c in train_set.clips]  # standardised batch by batch, after augmentation
    recorder = _augmenter(ExtractorRecord.from_dict(corpus.extractor)) if config.augment > 0 else None
    steps_per_epoch = math.ceil(len(train_v) / config.batch_size)
    if main and start is not None and not resume:
        # epoch 0: the started model on the user's own validation clips; fine-tuning must beat it clearly to replace it
        metrics, scores = validate(trained, val_set)
        state.update(best_top1=metrics["top1"], best_mrr=metrics["mrr"], best_epoch=0, start=metrics)
        trained.temperature = fit_temperature(scores)
        trained.save(run_dir / "best.pt")
    bar = progress_bar(config.epochs * steps_per_epoch, f"train {config.model}", "step",
                       initial=state["epoch"] * steps_per_epoch, enabled=progress and main)
    started = time.perf_counter()
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"]
        rng = np.random.default_rng([config.seed, epoch])  # per-epoch streams: a resumed run repeats them
        torch.manual_seed(config.seed * 100_003 + epoch + 1_000_003 * rank)  # each process its own dropout
        model.train()
        # every process draws the same order and windows: the global batches of a 1-process run
        order = rng.permutation(len(train_v))
        for s in range(0, len(order), config.batch_size):
            idx = order[s : s + config.batch_size]
            if len(idx) < max(2, world):
                continue
            clips = [Clip(str(i), train_v[i], train_a[i]) for i in idx]
            vw, aw, shifts = _windows(clips, config.window_s, rates, rng, max_shift_s)
            if recorder is not None:
                aw = [recorder.augment_audio(x, rng) if rng.random() < config.augment else x for x in aw]
            aw = [trained.standardise(x, "audio") for x in aw]
            (v, v_len), (a, a_len) = pad_batch(vw, device), pad_batch(aw, device)
            shard = _Shard(rank, world, len(idx)) if world > 1 else None
            terms = step_loss(v, v_len, a, a_len, shifts, config.negatives, rng, shard)
            loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # the norm before clipping (none with clip_grad 0): the text's exploding/vanishing gradients, logged
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad if config.clip_grad > 0 else math.inf)
            optimizer.step()
            if shard is not None:  # log the global batch's loss, not this process's share of it
                terms = shard.mean(terms)
                loss = sum(terms.values())
            if writer is not None:
                _log_step(writer, config, trained, val_set, epoch * steps_per_epoch + s // config.batch_size,
                          loss, grad_norm, terms)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", best_top1=f"{max(state['best_top1'], 0):.2f}")
        scheduler.step()
        if main:
            _end_epoch(writer, config, trained, val_set, run_dir, state, epoch + 1, float(loss.item()), optimizer,
                       scheduler)
        if world > 1:  # rank 0's validation decides for everyone: same early stop on every process
            box = [state]
            dist.broadcast_object_list(box, src=0)
            state = box[0]
    bar.close()
    result = {"model": config.model, "epochs": state["epoch"], "best_epoch": state.get("best_epoch", 0),
              "val_top1": state["best_top1"], "val_mrr": state["best_mrr"],
              "train_seconds": round(time.perf_counter() - started, 2), "history": state["history"]}
    if "start" in state:  # fine-tuned: how the started model did, and whether its weights were kept
        result.update(start_top1=state["start"]["top1"], start_mrr=state["start"]["mrr"],
                      kept_start=state.get("best_epoch", 0) == 0,
                      clear_gain=clear_gain(state["start"]["top1"], state["start"]["n"]))
    if main:
        # the run's settings beside its outcome, for TensorBoard's HPARAMS table across runs
        hparams = {k: v for k, v in asdict(config).items() if isinstance(v, (int, float, str, bool))}
        hparams.update({f"model/{k}": v for k, v in model.config.items() if isinstance(v, (int, float, str, bool))})
        outcome = {"hparam/val_top1": result["val_top1"], "hparam/val_mrr": result["val_mrr"]}
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(hparams, outcome):  # into this run's one events file (add_hparams
            writer.file_writer.add_summary(summary)  # would open a second one)
        for k, v in outcome.items():
            writer.add_scalar(k, v)
        writer.close()
        write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    if own_group:
        # Leave together (a process that tears gloo down while another still talks aborts), and tear
        # down without a deadlock: gloo's threads drop the last reference to a finished collective,
        # which takes the GIL, while the group's destructor joins those threads with the GIL held
        # (seen under load: rank 1 waited for ever). Holding the barrier's work, which holds every
        # collective before it, until the group is gone leaves those threads nothing to free.
        last = dist.barrier(async_op=True)
        last.wait()
        del step_loss  # DDP's reducer holds the group too
        dist.destroy_process_group()
        del last
    return result
