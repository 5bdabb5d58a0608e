"""The report's Markdown tables and the HTML page a person opens."""

import html.parser

from avmatch.report import html_report, markdown_table


def test_markdown_table_rounds_floats_and_keeps_the_columns_asked_for():
    text = markdown_table([{"model": "dual", "top1": 0.91234, "n": 3}, {"model": "lstm", "top1": 1.0}],
                          columns=["model", "top1"])
    lines = text.strip().splitlines()
    assert lines[0] == "| model | top1 |" and lines[1] == "|---|---|"
    assert lines[2] == "| dual | 0.912 |" and lines[3] == "| lstm | 1.000 |" and "n" not in text


class _Cells(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.wrong, self.images = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self.rows.append([])
            self.wrong += attrs.get("class") == "wrong"
        if tag == "img":
            self.images.append(attrs["src"])

    def handle_data(self, data):
        if self.rows and data.strip():
            self.rows[-1].append(data)


def test_html_report_escapes_marks_wrong_rows_and_embeds_the_heat_map(tmp_path):
    png = tmp_path / "h.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    pairs = [{"video": "<v1>", "audio": "a1", "score": 0.5, "right": True},
             {"video": "v2 & co", "audio": "a9", "score": 0.25, "right": False}]
    page = html_report(tmp_path / "r.html", "t <x>", [{"one-to-one": 0.5}], pairs, png).read_text()
    parser = _Cells()
    parser.feed(page)
    assert ["<v1>", "a1", "0.500", "True"] in parser.rows and ["v2 & co", "a9", "0.250", "False"] in parser.rows
    assert parser.wrong == 1 and "<v1>" not in page  # escaped in the page, read back as text
    assert len(parser.images) == 1 and parser.images[0].startswith("data:image/png;base64,")
    assert "(none)" not in page


def test_match_report_puts_the_doubtful_first_and_plays_each_pair_from_its_files(tmp_path):
    """match --report: run context, a breakdown by folder, the pairs sorted least sure first (unmatched
    before them), sortable and filterable, each row's play button pointing (relative to the page) at
    its silent video and its audio, with the offset."""
    import numpy as np

    from avmatch.cli import main
    from avmatch.demo import scenes
    from avmatch.demo.scenes import write_media

    for i, family in enumerate(("bounce", "lamps", "talker")):
        scene = scenes.make_scene([i, 3], family, duration_s=3.0, size=(48, 48))
        write_media(tmp_path / "videos" / "cam" / f"v{i}.mp4", scene.frames, None, fps=scene.fps)
        write_media(tmp_path / "audios" / f"a {i}.wav", None, scene.audio, sample_rate=scene.sample_rate)
    report = tmp_path / "out" / "report.html"
    assert main(["match", str(tmp_path / "videos"), str(tmp_path / "audios"), "-o", str(tmp_path / "out" / "pairs.csv"),
                 "--report", str(report)]) == 0
    page = report.read_text()

    class Rows(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.buttons, self.in_rows = [], 0, False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "table":
                self.in_rows = attrs.get("id") == "rows"
            if tag == "tr" and self.in_rows and "data-video" in attrs:
                self.rows.append(attrs)
            self.buttons += tag == "button" and self.in_rows

    parsed = Rows()
    parsed.feed(page)
    assert len(parsed.rows) == 3 and parsed.buttons == 3
    confidence = [float(r["data-confidence"]) for r in parsed.rows]
    assert confidence == sorted(confidence)
    from urllib.parse import unquote

    for r in parsed.rows:
        assert (report.parent / unquote(r["data-video-src"])).resolve() == (tmp_path / "videos" / f"{r['data-video']}.mp4").resolve()
        assert (report.parent / unquote(r["data-audio-src"])).is_file() and np.isfinite(float(r["data-offset"]))
    for needed in ("function sortBy", "function filterRows", "function play", 'id="doubtful"', "By folder", "cam",
                   "avmatch</th>", "sync (default)"):
        assert needed in page, needed
