"""What a person looks at: Markdown tables and the HTML report (the score heat map is written with
the match's other files, by :mod:`avmatch.matching.results`)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from avmatch.atomic import write_text


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_report(path: str | Path, title: str, summary: list[dict], pairs: list[dict], heatmap: str | Path | None = None) -> Path:
    """A single self-contained HTML page: summary table, heat map, one row per test video."""

    def table(rows: list[dict]) -> str:
        if not rows:
            return "<p>(none)</p>"
        cols = list(rows[0])
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = ""
        for r in rows:
            cls = ' class="wrong"' if r.get("right") is False else ""
            cells = "".join(f"<td>{html.escape(f'{r[c]:.3f}' if isinstance(r[c], float) else str(r[c]))}</td>" for c in cols)
            body += f"<tr{cls}>{cells}</tr>"
        return f"<table><tr>{head}</tr>{body}</table>"

    img = ""
    if heatmap and Path(heatmap).exists():
        data = base64.b64encode(Path(heatmap).read_bytes()).decode()
        img = f'<h2>Score matrix</h2><img alt="heat map" src="data:image/png;base64,{data}">'
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
tr.wrong{{background:#fdd}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1><h2>Summary</h2>{table(summary)}{img}<h2>Pairs</h2>{table(pairs)}</body></html>"""
    write_text(path, page)
    return Path(path)
