"""avmatch's outputs, by format: one writer per format (:data:`WRITERS`, :func:`get_writer`) for a
match's pairs and locate's placements; a match's set of files (pairs, score matrix, heat map) written
as one unit (:func:`write_match`) and its score matrix read back (:func:`load_scores`,
:func:`check_same_run`); the tables read back, whatever their format (:func:`read_rows`); the heat map.

It knows formats, not how a match is made: it reads a result through its fields and ``rows()``, and
imports nothing of matching (which, like metrics and the reports, imports it)."""

from __future__ import annotations

from avmatch.outputs.heatmap import heatmap_layout, heatmap_png
from avmatch.outputs.readers import read_rows
from avmatch.outputs.scores import check_same_run, heatmap_path, load_scores, scores_path, write_match
from avmatch.outputs.writers import (
    FORMATS,
    PAIR_COLUMNS,
    PLACEMENT_COLUMNS,
    WRITERS,
    CsvWriter,
    JsonWriter,
    Table,
    Writer,
    csv_cell,
    get_writer,
    match_table,
    placements_table,
    write_placements,
)

__all__ = ["FORMATS", "PAIR_COLUMNS", "PLACEMENT_COLUMNS", "WRITERS", "CsvWriter", "JsonWriter", "Table", "Writer",
           "check_same_run", "csv_cell", "get_writer", "heatmap_layout", "heatmap_png", "heatmap_path",
           "load_scores", "match_table", "placements_table", "read_rows", "scores_path", "write_match",
           "write_placements"]
