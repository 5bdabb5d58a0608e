"""One writer per output format (:data:`WRITERS`, picked by :func:`get_writer`), each writing a
:class:`Table`: a match's pairs (:func:`match_table`) or locate's placements (:func:`placements_table`).

CSV is the files' own format (``pairs.csv``, ``placements.csv``): the rows sorted, floats to 6
significant digits, a value not measured (NaN) an empty cell. JSON is the same rows for a program,
floats as computed, NaN as null, under the table's name beside what the run was (method ...)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from avmatch.atomic import write_text
from avmatch.errors import ArgumentError

PAIR_COLUMNS = ("video", "audio", "score", "margin")  # every pairs.csv has these (an empty one too)
TABLES = ("pairs", "placements")  # the tables written, by name (JSON's key of their rows)
PLACEMENT_COLUMNS = ("clip", "recording", "start_s", "end_s", "score", "z", "confidence", "best_recording",
                     "drift_ppm", "why")


def csv_cell(value):
    """A value as the CSV files write it: floats to 6 significant digits, a value not measured (NaN)
    as an empty cell (which spreadsheets and avmatch's readers take as "none"), anything else as is."""
    if isinstance(value, (float, np.floating)):  # numpy's float32 too (locate's start_s), which is no float
        return "" if value != value else f"{float(value):.6g}"
    return value


@dataclass
class Table:
    """Rows to write, in the order written, under ``name`` ("pairs", "placements"); ``about``: what made
    them (JSON writes it beside the rows; CSV has no room for it)."""

    name: str
    columns: list[str]
    rows: list[dict]
    about: dict = field(default_factory=dict)


def match_table(result) -> Table:
    """A :class:`avmatch.matching.MatchResult`'s pairs: one row per video (:meth:`~MatchResult.rows`),
    sorted by video id (two runs on the same inputs write the same file, whatever order the inputs were
    read in); about: the method, whether two-stage, the audios left unmatched (none when greedy)."""
    rows = sorted(result.rows(), key=lambda r: r["video"])
    unmatched = [] if result.method == "greedy" else result.unmatched_audios()
    return Table(TABLES[0], list(rows[0]) if rows else list(PAIR_COLUMNS), rows,
                 {"method": result.method, "two_stage": result.sparse, "unmatched_audios": unmatched})


def placements_table(placements: list) -> Table:
    """locate's placements (:class:`avmatch.matching.locate.Placement`), one row per clip, sorted by clip id."""
    rows = [{c: getattr(p, c) for c in PLACEMENT_COLUMNS} for p in sorted(placements, key=lambda p: p.clip)]
    return Table(TABLES[1], list(PLACEMENT_COLUMNS), rows)


class Writer:
    """Writes a :class:`Table` in one format (whisper's ``ResultWriter``): :meth:`text`, or atomically
    to a file with :meth:`write`."""

    format: ClassVar[str] = ""

    def text(self, table: Table) -> str:
        raise NotImplementedError

    def write(self, table: Table, path: str | Path) -> Path:
        write_text(path, self.text(table))
        return Path(path)


class CsvWriter(Writer):
    format = "csv"

    def text(self, table: Table) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=table.columns)
        writer.writeheader()
        for r in table.rows:
            writer.writerow({k: csv_cell(v) for k, v in r.items()})
        return buf.getvalue()


class JsonWriter(Writer):
    format = "json"

    def document(self, table: Table) -> dict:
        """What :meth:`text` writes, as a dict: ``about``'s entries, then the rows under the table's name."""
        return {**table.about, table.name: [{k: _json_value(v) for k, v in r.items()} for r in table.rows]}

    def text(self, table: Table) -> str:
        return json.dumps(self.document(table), indent=2) + "\n"


def _json_value(value):
    """A NumPy number as Python's; NaN and infinities (a value not measured) as null: JSON has no NaN."""
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


WRITERS: dict[str, type[Writer]] = {w.format: w for w in (CsvWriter, JsonWriter)}
FORMATS = tuple(WRITERS)


def get_writer(format: str) -> Writer:
    """The writer of ``format`` (one of :data:`FORMATS`); else one line."""
    if format not in WRITERS:
        raise ArgumentError(f"unknown output format {format!r}; known: {', '.join(FORMATS)}")
    return WRITERS[format]()


def write_placements(placements: list, path: str | Path, format: str = "csv") -> Path:
    """Write locate's placements (``placements.csv``) atomically."""
    return get_writer(format).write(placements_table(placements), path)
