"""The progress bar every long job shows (extract, train, locate, mux): one place for how it looks.

On a terminal it redraws as often as it likes; written to a file or a pipe (a log, CI) it updates at
most every 30 s, so a log gets a line now and then instead of one per step. ``avmatch -q`` (AVMATCH_QUIET in the
environment) turns every bar off."""

from __future__ import annotations

import os
import sys

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
