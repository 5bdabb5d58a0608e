"""Training: the one loop every model uses (``loop``), its settings (``config``), recipes as data and
the one resolver of what a user asked for (``recipes``), the run folder (``run_dir``), distributed
training under torchrun (``distributed``) and TensorBoard diagnostics (``diagnostics``).

A run folder holds ``config.json``, ``last.pt`` (every epoch, for ``--resume``), ``best.pt`` (best
validation top-1, what ``avmatch match`` uses), ``metrics.json`` and TensorBoard events in ``tb/``.

Under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set) the same loop trains with DistributedDataParallel:
every process builds the same global batch and encodes its own rows of it, the encodings are
all-gathered so the loss sees the whole global batch's negatives, and rank 0 alone validates and
writes the run folder. ``batch_size`` is the global batch, so N processes follow the 1-process run.
"""

from avmatch.training.config import TrainConfig
from avmatch.training.distributed import launch_processes
from avmatch.training.loop import train, validate
from avmatch.training.recipes import (
    ADAPT_FINE_TUNE,
    COMPARE,
    DEMO_FINE_TUNE,
    FINE_TUNE,
    RECIPES,
    choose_start,
    named_recipes,
    recipe,
    resolve,
)
from avmatch.training.run_dir import check_resume_settings

__all__ = ["ADAPT_FINE_TUNE", "COMPARE", "DEMO_FINE_TUNE", "FINE_TUNE", "RECIPES", "TrainConfig", "check_resume_settings", "choose_start",
           "launch_processes", "named_recipes", "recipe", "resolve", "train", "validate"]
