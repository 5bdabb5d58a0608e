"""What a person looks at: Markdown tables and the HTML report (the score heat map is written with
the match's other files, by :mod:`avmatch.outputs`)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from avmatch.atomic import write_text


def _finite(value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as a Markdown table; floats to 3 places, a missing or unmeasured value (None, NaN) as –."""
    columns = columns or list(rows[0])

    def fmt(v):
        return "–" if v is None or not _finite(v) else f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# the page's script: sort a table by a clicked column, filter its rows, play a row's pair in sync
_SCRIPT = """
function cellValue(row, i) {
  const t = row.cells[i].dataset.v !== undefined ? row.cells[i].dataset.v : row.cells[i].textContent;
  const x = parseFloat(t);
  return isNaN(x) ? t.toLowerCase() : x;
}
function sortBy(th) {
  const table = th.closest('table'), i = th.cellIndex, body = table.tBodies[0];
  const up = th.dataset.dir !== 'up';
  th.dataset.dir = up ? 'up' : 'down';
  const rows = Array.from(body.rows);
  rows.sort((a, b) => { const x = cellValue(a, i), y = cellValue(b, i);
    return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}
function filterRows() {
  const text = document.getElementById('filter').value.toLowerCase();
  const doubtful = document.getElementById('doubtful');
  for (const row of document.getElementById('rows').tBodies[0].rows) {
    const c = parseFloat(row.dataset.confidence);
    const unsure = !(c >= 0.9);
    row.hidden = !row.textContent.toLowerCase().includes(text) || (doubtful && doubtful.checked && !unsure);
  }
}
let offset = 0;
function play(button) {
  const row = button.closest('tr'), v = document.getElementById('pv'), a = document.getElementById('pa');
  offset = parseFloat(row.dataset.offset) || 0;
  document.getElementById('now').textContent = row.dataset.video + '  +  ' + row.dataset.audio
    + '  (audio starts ' + offset.toFixed(3) + ' s into the video)';
  document.getElementById('player').hidden = false;
  v.src = row.dataset.videoSrc; a.src = row.dataset.audioSrc;
  v.currentTime = 0; v.play();
}
function sync() {  // audio time = video time - offset (the audio starts offset s into the video)
  const v = document.getElementById('pv'), a = document.getElementById('pa');
  const t = v.currentTime - offset;
  if (v.paused || t < 0 || (a.duration && t > a.duration)) { a.pause(); return; }
  if (Math.abs(a.currentTime - t) > 0.08) a.currentTime = t;
  if (a.paused) a.play();
}
window.addEventListener('load', () => {
  const v = document.getElementById('pv');
  if (v) for (const e of ['play', 'pause', 'seeked', 'timeupdate']) v.addEventListener(e, sync);
});
"""


def _cell(value) -> str:
    """A table cell; a value not measured (NaN: a drift of a short take, the offset of an unmatched
    video) is left empty, as in the CSV files."""
    if not _finite(value):
        return "<td></td>"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    sort = f' data-v="{value!r}"' if isinstance(value, float) else ""
    return f"<td{sort}>{html.escape(text)}</td>"


def _table(rows: list[dict], table_id: str = "", media: list[dict] | None = None, anchors: dict | None = None) -> str:
    """A table whose header sorts it; with ``media`` (one dict per row: video_src, audio_src,
    offset_s) a play button per row; with ``anchors`` (video id -> the id of its place in the heat
    map) each row's video links there."""
    if not rows:
        return "<p>(none)</p>"
    cols = list(rows[0])
    head = ("<th>play</th>" if media else "") + "".join(
        f'<th onclick="sortBy(this)" title="sort">{html.escape(c)}</th>' for c in cols)
    body = ""
    for k, r in enumerate(rows):
        attrs = ' class="wrong"' if r.get("right") is False else ""
        conf = r.get("confidence")
        if isinstance(conf, float):
            attrs += f' data-confidence="{conf!r}"'
        play = ""
        if media:
            m = media[k]
            attrs += "".join(f' data-{name}="{html.escape(str(m.get(key, "")), quote=True)}"'
                             for name, key in (("video", "video"), ("audio", "audio"), ("video-src", "video_src"),
                                               ("audio-src", "audio_src"), ("offset", "offset_s")))
            play = '<td><button onclick="play(this)">&#9654;</button></td>' if m.get("video_src") and m.get("audio_src") \
                else "<td></td>"
        cells = [_cell(r[c]) for c in cols]
        if anchors and "video" in cols and r["video"] in anchors:  # the name links to its pair's place in the map
            cells[cols.index("video")] = (f'<td><a href="#{anchors[r["video"]]}" title="its place in the heat map">'
                                          f'{html.escape(str(r["video"]))}</a></td>')
        body += f"<tr{attrs}>{play}{''.join(cells)}</tr>"
    return f'<table{f" id={table_id!r}" if table_id else ""}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_report(path: str | Path, title: str, summary: list[dict], pairs: list[dict], heatmap: str | Path | None = None,
                image_title: str = "Score matrix", rows_title: str = "Pairs", media: list[dict] | None = None,
                extra: list[tuple[str, list[dict]]] = (), places: dict | None = None) -> Path:
    """A single self-contained HTML page: summary table, an image (the heat map), any ``extra``
    (title, rows) tables, and one row per video in a table that sorts by any column (click its
    header), filters by text and, when rows carry a confidence, to the doubtful ones (< 0.9). With
    ``media`` (one dict per row: video, audio, video_src, audio_src as URLs relative to the page,
    offset_s) each row has a play button: the silent video plays with its audio at the offset. With
    ``places`` (video id -> its pair's box in the image as shares of it: left, top, width, height;
    :func:`avmatch.outputs.heatmap_png` fills them) a row's video name links to its place in
    the heat map, which the link outlines, and each place names its pair when pointed at."""
    img, anchors = "", {}
    if heatmap and Path(heatmap).exists():
        data = base64.b64encode(Path(heatmap).read_bytes()).decode()
        audio_of = {r.get("video"): r.get("audio", "") for r in pairs}
        boxes = ""
        for k, (video, (left, top, width, height)) in enumerate((places or {}).items()):
            anchors[video] = f"cell-{k}"
            name = f"{video} + {audio_of.get(video) or '(unmatched)'}"
            boxes += (f'<a class="cell" id="cell-{k}" title="{html.escape(name, quote=True)}" '
                      f'style="left:{100 * left:.3f}%;top:{100 * top:.3f}%;width:{100 * width:.3f}%;'
                      f'height:{100 * height:.3f}%"></a>')
        img = (f'<h2>{html.escape(image_title)}</h2><div class="map"><img alt="{html.escape(image_title)}" '
               f'src="data:image/png;base64,{data}">{boxes}</div>')
    has_conf = any(isinstance(r.get("confidence"), float) for r in pairs)
    controls = ('<p><input id="filter" placeholder="filter rows" oninput="filterRows()"> '
                + ('<label><input type="checkbox" id="doubtful" onchange="filterRows()"> only doubtful pairs '
                   '(confidence &lt; 0.9)</label>' if has_conf else "") + " &middot; click a column's name to sort</p>")
    player = ('<div id="player" hidden><p id="now"></p><video id="pv" controls muted width="480"></video>'
              '<audio id="pa" preload="auto"></audio></div>') if media else ""
    sections = "".join(f"<h2>{html.escape(t)}</h2>{_table(rows)}" for t, rows in extra)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
th{{cursor:pointer;background:#f4f4f4}}tr.wrong{{background:#fdd}}img{{max-width:100%;display:block}}
.map{{position:relative;display:inline-block;max-width:100%}}.cell{{position:absolute}}
.cell:target{{outline:3px solid #f0f}}#player{{position:sticky;top:0;background:#fff;padding:4px}}</style>
<script>{_SCRIPT}</script></head><body>
<h1>{html.escape(title)}</h1><h2>Summary</h2>{_table(summary)}{sections}{img}<h2>{html.escape(rows_title)}</h2>
{controls}{player}{_table(pairs, "rows", media, anchors)}</body></html>"""
    write_text(path, page)
    return Path(path)


def timeline_figure(placements: list):
    """The locate report's picture: one line per recording a clip names, drawn over the recording's
    whole length (grey) so that a take is seen where it sits in it; placed clips coloured by
    confidence, refused clips' best places hatched. None when no clip names a recording."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [p for p in placements if p.recording or p.best_recording]  # refused clips: their best place, hatched
    if not shown:
        return None
    recordings = sorted({p.recording or p.best_recording for p in shown})
    length = {p.best_recording: p.recording_s for p in shown if math.isfinite(p.recording_s)}
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.5 * len(recordings)))
    colours = matplotlib.colormaps["viridis"]
    for y, rec in enumerate(recordings):
        if rec in length:  # the whole recording, behind its clips
            ax.barh(y, length[rec], left=0.0, height=0.8, color="#e6e6e6", edgecolor="#999999", linewidth=0.5)
        for p in (q for q in shown if (q.recording or q.best_recording) == rec):
            style = {"color": colours(p.confidence)} if p.recording else {
                "color": "white", "hatch": "///", "alpha": 0.8}
            ax.barh(y, p.end_s - p.start_s, left=p.start_s, height=0.6, edgecolor="black", linewidth=0.3, **style)
            if len(shown) <= 40:
                ax.text(p.start_s, y + 0.35, p.clip + ("" if p.recording else " (refused)"), fontsize=6)
    ax.set_xlim(0.0, max([*length.values(), *(p.end_s for p in shown)]) * 1.01)
    ax.set_yticks(range(len(recordings)), recordings, fontsize=7)
    ax.set_xlabel("seconds into the recording (grey: the whole recording)")
    ax.set_title("where each clip sits (colour: confidence, dark 0 .. yellow 1; hatched: a refused "
                 "clip's best place)")
    fig.tight_layout()
    return fig


def placements_report(path: str | Path, placements: list) -> Path:
    """report.html of a locate run: a timeline per recording (which clip sits where in it, coloured
    by confidence; :func:`timeline_figure`) and every clip in a table, the refused ones first."""
    import tempfile

    import matplotlib.pyplot as plt

    png = None
    with tempfile.TemporaryDirectory() as tmp:
        fig = timeline_figure(placements)
        if fig is not None:
            png = Path(tmp) / "timeline.png"
            fig.savefig(png, dpi=110)
            plt.close(fig)
        placed = [p for p in placements if p.recording]
        refused = [p for p in placements if not p.recording]
        recordings = {p.recording or p.best_recording for p in placements} - {""}
        summary = [{"clips": len(placements), "placed": len(placed), "refused": len(refused),
                    "recordings used": len(recordings)}]
        rows = [{"clip": p.clip, "recording": p.recording or "(refused)", "start_s": p.start_s, "end_s": p.end_s,
                 "confidence": p.confidence, "best place in": p.best_recording, "why refused": p.why,
                 "drift_ppm": p.drift_ppm}
                for p in sorted(placements, key=lambda p: (bool(p.recording), p.recording, p.start_s))]
        return html_report(path, "avmatch locate", summary, rows, png, image_title="Timeline per recording",
                           rows_title="Clips (refused first)")


def match_report(path: str | Path, result, context: dict | None = None) -> Path:
    """report.html of a match: run context and counts, a breakdown by folder, the heat map (chosen
    pairs on its diagonal), and every video's pair in a table, the doubtful ones first, each with a
    play button (the silent video with its chosen audio at the estimated offset; the media files
    are linked relative to the page, so keep them where they are)."""
    import os
    import tempfile
    import time
    import urllib.parse

    import numpy as np

    from avmatch import __version__
    from avmatch.outputs import heatmap_png

    path = Path(path)
    rows = result.rows()
    conf = np.array([r.get("confidence", np.nan) for r in rows], float)
    sure = conf >= 0.9
    summary = [{"avmatch": __version__, "run": time.strftime("%Y-%m-%d %H:%M:%S"), **(context or {}),
                "videos": len(result.video_ids), "audios": len(result.audio_ids),
                "matched": int((result.chosen >= 0).sum()), "unmatched audios": len(result.unmatched_audios()),
                **({"confidence >= 0.9": int(sure.sum())} if result.confidence is not None else {})}]
    folders: dict[str, list[int]] = {}
    for i, v in enumerate(result.video_ids):
        folders.setdefault(v.rpartition("/")[0] or ".", []).append(i)
    by_folder = [{"folder": f, "videos": len(ix), "matched": int((result.chosen[ix] >= 0).sum()),
                  **({"confidence >= 0.9": int(sure[ix].sum()), "mean confidence": float(np.nanmean(conf[ix]))
                      if np.isfinite(conf[ix]).any() else float("nan")} if result.confidence is not None else {})}
                 for f, ix in sorted(folders.items())]

    def url(media: str) -> str:
        if not media:
            return ""
        rel = os.path.relpath(Path(media).resolve(), path.resolve().parent)
        return urllib.parse.quote(Path(rel).as_posix())

    order = sorted(range(len(rows)), key=lambda i: (rows[i]["audio"] != "", np.nan_to_num(conf[i], nan=-1.0),
                                                    rows[i]["video"]))
    media = [{"video": rows[i]["video"], "audio": rows[i]["audio"],
              "video_src": url(result.sources.get("video", {}).get(rows[i]["video"], "")),
              "audio_src": url(result.sources.get("audio", {}).get(rows[i]["audio"], "")),
              "offset_s": rows[i].get("offset_s", 0.0) if np.isfinite(rows[i].get("offset_s", 0.0)) else 0.0}
             for i in order]
    places: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        png = None
        if not result.sparse:
            png = heatmap_png(result.scores, Path(tmp) / "heat.png", result.video_ids, result.audio_ids, result.chosen,
                              probability=result.normalisation == "dual-softmax", places=places)
        return html_report(path, "avmatch match", summary, [rows[i] for i in order], png,
                           image_title="Score matrix (each video's choice on the diagonal)",
                           rows_title="Pairs (unmatched and least sure first; a video's name links to its place in "
                                      "the score matrix)", media=media, extra=[("By folder", by_folder)], places=places)
