"""The run folder: ``config.json``, ``last.pt`` (every epoch, for ``--resume``), ``best.pt`` (best
validation top-1, what ``avmatch match`` uses), ``metrics.json`` and TensorBoard events in ``tb/``;
claimed for a new run, checked before one is resumed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from avmatch.atomic import write_text
from avmatch.checkpoint import load_trained
from avmatch.corpus import Corpus
from avmatch.errors import AvmatchError
from avmatch.models.base import parameter_table
from avmatch.training.config import TrainConfig

RUN_FILES = ("config.json", "best.pt", "last.pt", "metrics.json", "tb")  # what a run folder holds


def claim_run_dir(run_dir: Path, force: bool, clear: bool) -> None:
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
    and its start are checked once the recipe is resolved (:func:`resumable`)."""
    saved = saved_config(run_dir)
    options = asked.get("model_options") or {}
    changed = [f"{k} {getattr(saved, k)!r} there, {v!r} asked" for k, v in asked.items()
               if k not in ("model", "init", "model_options") and hasattr(saved, k) and getattr(saved, k) != v]
    changed += [f"model option {k} {saved.model_options.get(k)!r} there, {v!r} asked" for k, v in options.items()
                if saved.model_options.get(k) != v]
    if changed:
        raise AvmatchError(f"--resume (resume=True) goes on with the run as it was started ({'; '.join(changed)}); "
                           f"to change that, train a new run (another folder, or --force / force=True)", run_dir)


def resumable(run_dir: Path, config: TrainConfig, corpus: Corpus) -> TrainConfig:
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


def open_run(run_dir: Path, config: TrainConfig, corpus: Corpus, train_set: Corpus, val_set: Corpus,
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

