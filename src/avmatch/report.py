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
        return f"{v:.3f}" if isinstance(v, float) else "–" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_report(path: str | Path, title: str, summary: list[dict], pairs: list[dict], heatmap: str | Path | None = None,
                image_title: str = "Score matrix", rows_title: str = "Pairs") -> Path:
    """A single self-contained HTML page: summary table, an image (the heat map), one row per video."""

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
        img = f'<h2>{html.escape(image_title)}</h2><img alt="{html.escape(image_title)}" src="data:image/png;base64,{data}">'
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
tr.wrong{{background:#fdd}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1><h2>Summary</h2>{table(summary)}{img}<h2>{html.escape(rows_title)}</h2>{table(pairs)}</body></html>"""
    write_text(path, page)
    return Path(path)


def placements_report(path: str | Path, placements: list) -> Path:
    """report.html of a locate run: a timeline per recording (which clip sits where, coloured by
    confidence) and every clip in a table, the refused ones first."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    placed = [p for p in placements if p.recording]
    recordings = sorted({p.recording for p in placed})
    png = None
    with tempfile.TemporaryDirectory() as tmp:
        if placed:
            fig, ax = plt.subplots(figsize=(11, 1.0 + 0.5 * len(recordings)))
            colours = matplotlib.colormaps["viridis"]
            for y, rec in enumerate(recordings):
                for p in (q for q in placed if q.recording == rec):
                    ax.barh(y, p.end_s - p.start_s, left=p.start_s, height=0.6, color=colours(p.confidence),
                            edgecolor="black", linewidth=0.3)
                    if len(placed) <= 40:
                        ax.text(p.start_s, y + 0.35, p.clip, fontsize=6)
            ax.set_yticks(range(len(recordings)), recordings, fontsize=7)
            ax.set_xlabel("seconds into the recording")
            ax.set_title("where each clip sits (colour: confidence, dark 0 .. yellow 1)")
            fig.tight_layout()
            png = Path(tmp) / "timeline.png"
            fig.savefig(png, dpi=110)
            plt.close(fig)
        refused = [p for p in placements if not p.recording]
        summary = [{"clips": len(placements), "placed": len(placed), "refused": len(refused),
                    "recordings used": len(recordings)}]
        rows = [{"clip": p.clip, "recording": p.recording or "(refused)", "start_s": p.start_s, "end_s": p.end_s,
                 "confidence": p.confidence, "best place in": p.best_recording, "drift_ppm": p.drift_ppm}
                for p in sorted(placements, key=lambda p: (bool(p.recording), p.recording, p.start_s))]
        return html_report(path, "avmatch locate", summary, rows, png, image_title="Timeline per recording",
                           rows_title="Clips (refused first)")
