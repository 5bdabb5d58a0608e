"""What a run shows in TensorBoard besides its losses: every layer's weights, gradients and outputs
(the report's diagnostics), matched vs mismatched scores, the validation score matrix, and the run's
settings beside its outcome."""

from __future__ import annotations

import contextlib
from dataclasses import asdict

import numpy as np
import torch
from torch import Tensor, nn

from avmatch import losses
from avmatch.checkpoint import Trained
from avmatch.corpus import Corpus
from avmatch.inference import score_matrix
from avmatch.training.config import TrainConfig


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


@contextlib.contextmanager
def quiet_event_threads():
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


def log_step(writer, config: TrainConfig, trained: Trained, val_set: Corpus, step: int, loss: Tensor,
             grad_norm: Tensor, terms: dict[str, Tensor]) -> None:
    writer.add_scalar("loss/total", loss.item(), step)
    writer.add_scalar("grad/norm", grad_norm.item(), step)
    for k, t in terms.items():
        writer.add_scalar(f"loss/{k}", t.item(), step)
    if config.histograms and config.histogram_steps and step % config.histogram_steps == 0:
        _log_layers(writer, trained.model, trained, val_set, step)



def log_epoch(writer, config: TrainConfig, trained: Trained, val_set: Corpus, epoch: int, metrics: dict,
              scores: np.ndarray, lr: float) -> None:
    """The validation after ``epoch``: its metrics and loss, the learning rate and, with histograms,
    the layers (unless logged every few steps instead), the scores and the score matrix."""
    model = trained.model
    for k in ("top1", "top5", "mrr", "a2v_top1"):
        writer.add_scalar(f"val/{k}", metrics[k], epoch)
    writer.add_scalar("val/loss", losses.validation_loss(scores, model.loss), epoch)
    writer.add_scalar("lr", lr, epoch)
    if config.histograms:
        if not config.histogram_steps:  # per step instead: logged in the training loop
            _log_layers(writer, model, trained, val_set, epoch)
        _log_scores(writer, model, scores, epoch)
        _log_heatmap(writer, scores, epoch)


def log_outcome(writer, config: TrainConfig, model: nn.Module, result: dict) -> None:
    """The run's settings beside its outcome, for TensorBoard's HPARAMS table across runs."""
    hparams = {k: v for k, v in asdict(config).items() if isinstance(v, (int, float, str, bool))}
    hparams.update({f"model/{k}": v for k, v in model.config.items() if isinstance(v, (int, float, str, bool))})
    outcome = {"hparam/val_top1": result["val_top1"], "hparam/val_mrr": result["val_mrr"]}
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    for summary in hparams_summaries(hparams, outcome):  # into this run's one events file (add_hparams
        writer.file_writer.add_summary(summary)  # would open a second one)
    for k, v in outcome.items():
        writer.add_scalar(k, v)
