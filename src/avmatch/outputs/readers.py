"""Readers of the tables avmatch writes and takes (pairs, placements, keys), by format: a ``.json`` file
as :class:`avmatch.outputs.JsonWriter` writes it, any other as CSV. Each gives the rows as dicts of
text, as the CSV file holds them, so a reader of pairs never asks which format they came in."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from avmatch.atomic import regular
from avmatch.errors import AvmatchError
from avmatch.outputs.writers import TABLES, csv_cell


def read_rows(path: str | Path, required: tuple[str, ...] = ("video", "audio")) -> list[dict]:
    """The rows of a table file as dicts of text, names and values stripped of spaces; a regular file
    only, with the ``required`` columns (else one line)."""
    path = regular(path)
    json_file = path.suffix.lower() == ".json"
    header, rows = _json_rows(path) if json_file else _csv_rows(path)
    missing = [c for c in required if c not in (header if header is not None else required)]
    if missing:
        raise AvmatchError(f"{'JSON' if json_file else 'CSV'} lacks column(s) {', '.join(missing)} "
                           f"(has: {', '.join(header)})", path)
    return rows


def _csv_rows(path: Path) -> tuple[list[str], list[dict]]:
    """A UTF-8 BOM and spaces after commas, as spreadsheets write them, change nothing; blank rows are skipped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = [h.strip() for h in next(reader, [])]
            return header, [dict(zip(header, (v.strip() for v in row), strict=False)) for row in reader
                            if any(v.strip() for v in row)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise AvmatchError(f"not a readable UTF-8 CSV file ({type(err).__name__}: {str(err)[:100]})", path) from None


def _json_rows(path: Path) -> tuple[list[str] | None, list[dict]]:
    """A list of rows, or a JSON writer's document (its rows under ``pairs`` or ``placements``); values
    as a CSV cell would hold them (null: empty, floats to 6 significant digits). No rows: no header to check."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        raise AvmatchError(f"not a readable UTF-8 JSON file ({type(err).__name__}: {str(err)[:100]})", path) from None
    if isinstance(doc, dict):
        doc = next((doc[name] for name in TABLES if name in doc), None)
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise AvmatchError(f"holds no rows (a list of objects, or avmatch's document with its rows under "
                           f"{' or '.join(TABLES)})", path)
    rows = [{str(k).strip(): _text(v) for k, v in r.items()} for r in doc]
    return (list(rows[0]) if rows else None), rows


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(csv_cell(float(value)) if isinstance(value, float) else value).strip()
