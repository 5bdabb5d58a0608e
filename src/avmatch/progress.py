"""The progress bar every long job shows (extract, train, locate, mux): one place for how it looks.

On a terminal it redraws as often as it likes; written to a file or a pipe (a log, CI) it updates at
most every 30 s, so a log gets a line now and then instead of one per step. ``avmatch -q`` (AVMATCH_QUIET in the
environment) turns every bar off."""

from __future__ import annotations

import contextlib
import contextvars
import os
import resource
import sys
import time
from pathlib import Path

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def quiet() -> bool:
    """Whether the user asked for results and errors only (``avmatch -q``: AVMATCH_QUIET set)."""
    return bool(os.environ.get("AVMATCH_QUIET"))


class _LogBar(tqdm):
    """The bar in a log: a whole line at most every LOG_INTERVAL_S (and at the end), never a redraw
    with carriage returns, and no redraw when only the figures beside it change."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        self.fp.write((self.__str__() if msg is None else msg).strip("\r") + "\n")
        self.fp.flush()
        return True

    def set_postfix(self, ordered_dict=None, refresh: bool = False, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)


def bar(total: int, desc: str, unit: str, initial: int = 0, enabled: bool = True) -> tqdm:
    terminal = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kind = tqdm if terminal else _LogBar
    return kind(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled or quiet(), dynamic_ncols=True,
                mininterval=0.1 if terminal else LOG_INTERVAL_S, maxinterval=max(10.0, LOG_INTERVAL_S))


# ------------------------------------------------------------------------------------------ stages
#
# Where a long job spends its time and memory: the code marks its stages (``with stage("search"):``),
# which cost nothing unless a caller records them (``with recording_stages() as stages:``, as
# benchmarks/scale.py does). Each stage's wall and CPU time (all threads) add up over its repeats;
# its peak is the process's resident-memory peak during it (Linux: the peak is reset as it starts).

_STAGES: contextvars.ContextVar[dict | None] = contextvars.ContextVar("avmatch_stages", default=None)
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _peak_mib() -> float:
    """The process's resident-memory peak in MiB (VmHWM; ru_maxrss where /proc has none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    try:
        _CLEAR_REFS.write_text("5")  # "5" resets VmHWM to the current resident size
    except OSError:
        pass


@contextlib.contextmanager
def recording_stages():
    """Record the stages run inside: yields {name: {"wall_s", "cpu_s", "peak_mib", "calls", notes}} in the
    order the stages first ran (a stage run again adds to its times). A stage inside another counts
    in both."""
    stages: dict[str, dict] = {}
    token = _STAGES.set(stages)
    try:
        yield stages
    finally:
        _STAGES.reset(token)


@contextlib.contextmanager
def stage(name: str):
    """Mark a stage of a long job (see :func:`recording_stages`); free when nothing records. Yields a
    dict where the job may note what it chose (``with stage("x") as note: note["k"] = 5``); the
    record keeps the first call's notes."""
    stages = _STAGES.get()
    if stages is None:
        yield {}
        return
    row = stages.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "peak_mib": 0.0, "calls": 0})
    _note_peak(stages)  # the stages around this one keep their peak so far before it is reset
    _reset_peak()
    row["open"] = row.get("open", 0) + 1
    wall, cpu = time.perf_counter(), time.process_time()
    notes: dict = {}
    try:
        yield notes
    finally:
        for key, value in notes.items():  # the first call's notes stand (a job's main round comes first)
            row.setdefault(key, value)
        row["wall_s"] += time.perf_counter() - wall
        row["cpu_s"] += time.process_time() - cpu
        row["calls"] += 1
        _note_peak(stages)
        row["open"] -= 1
        if not row["open"]:
            del row["open"]


def _note_peak(stages: dict) -> None:
    peak = _peak_mib()
    for row in stages.values():
        if row.get("open"):
            row["peak_mib"] = max(row["peak_mib"], peak)
