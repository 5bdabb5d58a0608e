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
