"""Training under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set) with DistributedDataParallel: every
process builds the same global batch and encodes its own rows of it, the encodings are all-gathered so
the loss sees the whole global batch's negatives, and rank 0 alone validates and writes the run folder.
``batch_size`` is the global batch, so N processes follow the 1-process run."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from avmatch import losses
from avmatch.checkpoint import resolve_device
from avmatch.errors import AvmatchError


@dataclass(frozen=True)
class Shard:
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


def loss_terms(model: nn.Module, v, v_len, a, a_len, shifts: list[int], negatives: int,
               rng: np.random.Generator, shard: Shard | None = None) -> dict:
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


class Step(nn.Module):
    """The training step's loss as a module. DistributedDataParallel averages the gradients of what
    runs inside its forward(), and a step calls encode_*/score_* rather than the model's forward, so
    the step itself is what DDP wraps (no hand-written all-reduce, and DDP overlaps it with backward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return loss_terms(self.model, *args)


def process_group(device: str | torch.device | None) -> tuple[int, int, torch.device, bool]:
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


def launch_processes(processes: int, argv: list[str]) -> None:
    """Run ``python -m avmatch ARGV`` as ``processes`` DDP processes on this machine, as
    ``torchrun --standalone --nproc-per-node N -m avmatch ARGV`` does (a free port is chosen)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--standalone", "--nproc-per-node", str(processes), "-m", "avmatch", *argv])
    except ChildFailedError:
        raise AvmatchError(f"a training process of {processes} failed (its error is above)") from None

