"""The one training loop every model uses. Models differ by their score and loss, not by loops."""

from __future__ import annotations

import contextlib
import json
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from avmatch.atomic import write_text
from avmatch.checkpoint import Trained, feature_stats, load_trained
from avmatch.corpus import Clip, Corpus
from avmatch.errors import AvmatchError
from avmatch.features.record import ExtractorRecord
from avmatch.inference import check_fits, pad_batch, score_matrix
from avmatch.matching.dense import fit_temperature
from avmatch.metrics import retrieval_metrics
from avmatch.models import build_model, capabilities, model_entry
from avmatch.progress import bar as progress_bar
from avmatch.shipped import model_path
from avmatch.training.config import TrainConfig
from avmatch.training.diagnostics import log_epoch, log_outcome, log_step, quiet_event_threads
from avmatch.training.distributed import Shard, Step, loss_terms, process_group
from avmatch.training.run_dir import claim_run_dir, open_run, resumable


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


def train(corpus: Corpus, run_dir: str | Path, config: TrainConfig, resume: bool = False,
          device: torch.device | None = None, progress: bool = True, force: bool = False) -> dict:
    """Train ``config.model`` on the paired clips of ``corpus``; returns the final metrics.

    ``run_dir`` must be new or empty, unless ``resume`` (continue the run in it) or ``force``
    (clear the previous run in it first)."""
    with quiet_event_threads(), _repeatable():
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


def _max_shift(model: nn.Module, config: TrainConfig, corpus: Corpus) -> float:
    """How far a timing model's training shifts the audio (seconds); 0 for other models."""
    if not capabilities(model).timing:
        return 0.0
    if corpus.video_rate_hz != corpus.audio_rate_hz:
        raise AvmatchError(f"model {config.model!r} needs video and audio features at one rate, "
                           f"not {corpus.video_rate_hz} and {corpus.audio_rate_hz} Hz", corpus.root)
    half = model.max_lag / corpus.audio_rate_hz / 2
    return min(config.max_shift_s, 2 * half) if config.max_shift_s >= 0 else half


def _end_epoch(writer, config: TrainConfig, trained: Trained, val_set: Corpus, run_dir: Path, state: dict,
               epoch: int, loss: float, optimizer, scheduler) -> None:
    """Validate after ``epoch`` (counted from 1), log it, keep best.pt when it beats the best so far
    (:func:`_beats`) and write last.pt with what --resume needs; updates ``state``."""
    metrics, scores = validate(trained, val_set)
    log_epoch(writer, config, trained, val_set, epoch, metrics, scores, optimizer.param_groups[0]["lr"])
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


def _prepare(corpus: Corpus, run_dir: Path, config: TrainConfig, resume: bool, force: bool, main: bool,
             world: int) -> tuple[TrainConfig, Trained | None, Corpus, Corpus]:
    """What a run trains, checked before any work: its config (a resumed run's own), the checkpoint it
    starts from (fine-tuning), and its training and validation clips; the run folder claimed."""
    paired = corpus.paired()
    if len(paired.clips) < 4:
        raise AvmatchError(f"training needs at least 4 clips with both video and audio, found {len(paired.clips)}", corpus.root)
    if resume:
        config = resumable(run_dir, config, corpus)
    else:
        claim_run_dir(run_dir, force, clear=main)
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
    return config, start, train_set, val_set


def _resume(run_dir: Path, trained: Trained, optimizer, scheduler, device: torch.device) -> dict:
    """last.pt's weights, optimiser and schedule into a resumed run; its training state (epoch, best, history)."""
    last = load_trained(run_dir / "last.pt", device)
    _take_weights(trained, last)
    optimizer.load_state_dict(last.extra["optimizer"])
    scheduler.load_state_dict(last.extra["scheduler"])
    return last.extra["state"]


def _start_as_best(trained: Trained, val_set: Corpus, run_dir: Path, state: dict) -> None:
    """Epoch 0 of a fine-tune: the started model on the user's own validation clips, kept as best.pt;
    fine-tuning must beat it clearly (:func:`_beats`) to replace it."""
    metrics, scores = validate(trained, val_set)
    state.update(best_top1=metrics["top1"], best_mrr=metrics["mrr"], best_epoch=0, start=metrics)
    trained.temperature = fit_temperature(scores)
    trained.save(run_dir / "best.pt")


def _batch(trained: Trained, clips: list[Clip], config: TrainConfig, rates: tuple[float, float],
           rng: np.random.Generator, max_shift_s: float, recorder, device: torch.device):
    """A training step's input: a random window of each clip (the audio shifted by up to ``max_shift_s``),
    the audio re-recorded by ``recorder`` for a share ``config.augment`` of them, then standardised;
    padded to (video, lengths), (audio, lengths), and each clip's shift in audio rows."""
    vw, aw, shifts = _windows(clips, config.window_s, rates, rng, max_shift_s)
    if recorder is not None:
        aw = [recorder.augment_audio(x, rng) if rng.random() < config.augment else x for x in aw]
    aw = [trained.standardise(x, "audio") for x in aw]
    return pad_batch(vw, device), pad_batch(aw, device), shifts


def _result(config: TrainConfig, state: dict, seconds: float) -> dict:
    """The run's final metrics (metrics.json); fine-tuned, also how the started model did and whether
    its weights were kept."""
    result = {"model": config.model, "epochs": state["epoch"], "best_epoch": state.get("best_epoch", 0),
              "val_top1": state["best_top1"], "val_mrr": state["best_mrr"],
              "train_seconds": round(seconds, 2), "history": state["history"]}
    if "start" in state:
        result.update(start_top1=state["start"]["top1"], start_mrr=state["start"]["mrr"],
                      kept_start=state.get("best_epoch", 0) == 0,
                      clear_gain=clear_gain(state["start"]["top1"], state["start"]["n"]))
    return result


def _train(corpus: Corpus, run_dir: str | Path, config: TrainConfig, resume: bool,
           device: torch.device | None, progress: bool, force: bool) -> dict:
    run_dir = Path(run_dir)
    rank, world, device, own_group = process_group(device)
    main = rank == 0  # the one process that validates, logs and writes the run folder
    config, start, train_set, val_set = _prepare(corpus, run_dir, config, resume, force, main, world)
    trained = _new_trained(config, corpus, train_set, start, device)
    model = trained.model
    optimizer, scheduler = _optimiser(model, config)
    state = {"epoch": 0, "best_top1": -1.0, "best_mrr": -1.0, "bad_epochs": 0, "history": []}
    if resume:
        state = _resume(run_dir, trained, optimizer, scheduler, device)
    step_loss = partial(loss_terms, model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_loss = DistributedDataParallel(Step(model), device_ids=[device.index] if device.type == "cuda" else None)
    writer = open_run(run_dir, config, corpus, train_set, val_set, device, world, model) if main else None
    rates = (corpus.video_rate_hz, corpus.audio_rate_hz)
    max_shift_s = _max_shift(model, config, corpus)
    train_v = [trained.standardise(c.video, "video") for c in train_set.clips]
    train_a = [c.audio for c in train_set.clips]  # standardised batch by batch, after augmentation
    recorder = _augmenter(ExtractorRecord.from_dict(corpus.extractor)) if config.augment > 0 else None
    steps_per_epoch = math.ceil(len(train_v) / config.batch_size)
    if main and start is not None and not resume:
        _start_as_best(trained, val_set, run_dir, state)
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
            (v, v_len), (a, a_len), shifts = _batch(trained, clips, config, rates, rng, max_shift_s, recorder, device)
            shard = Shard(rank, world, len(idx)) if world > 1 else None
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
                log_step(writer, config, trained, val_set, epoch * steps_per_epoch + s // config.batch_size,
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
    result = _result(config, state, time.perf_counter() - started)
    if main:
        log_outcome(writer, config, model, result)
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
