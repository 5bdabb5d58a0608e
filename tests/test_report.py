"""The report's Markdown tables and the HTML page a person opens."""

import html.parser

import pytest

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


@pytest.fixture(scope="module")
def matched(tmp_path_factory):
    """match --report on three generated scenes (silent videos in a sub-folder, wav audios)."""
    from avmatch.cli import main
    from avmatch.demo import scenes
    from avmatch.media import write_media

    root = tmp_path_factory.mktemp("report")
    for i, family in enumerate(("bounce", "lamps", "talker")):
        scene = scenes.make_scene([i, 3], family, duration_s=3.0, size=(48, 48))
        write_media(root / "videos" / "cam" / f"v{i}.mp4", scene.frames, None, fps=scene.fps)
        write_media(root / "audios" / f"a {i}.wav", None, scene.audio, sample_rate=scene.sample_rate)
    report = root / "out" / "report.html"
    assert main(["match", str(root / "videos"), str(root / "audios"), "-o", str(root / "out" / "pairs.csv"),
                 "--report", str(report)]) == 0
    return root, report


def test_match_report_puts_the_doubtful_first_and_plays_each_pair_from_its_files(matched):
    """match --report: run context, a breakdown by folder, the pairs sorted least sure first (unmatched
    before them), sortable and filterable, each row's play button pointing (relative to the page) at
    its silent video and its audio, with the offset."""
    import numpy as np

    root, report = matched
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
        assert (report.parent / unquote(r["data-video-src"])).resolve() == (root / "videos" / f"{r['data-video']}.mp4").resolve()
        assert (report.parent / unquote(r["data-audio-src"])).is_file() and np.isfinite(float(r["data-offset"]))
    for needed in ("function sortBy", "function filterRows", "function play", 'id="doubtful"', "By folder", "cam",
                   "avmatch</th>", "sync (default)"):
        assert needed in page, needed


def _browser():
    """Headless Chromium under Selenium; skipped where either is missing, unless AVMATCH_BROWSER_TESTS=1
    (.ci/run installs Chromium and sets it once both are there, so there the test runs or fails)."""
    import os
    import shutil

    binary, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        binary = None
    if not (binary and driver):
        if os.environ.get("AVMATCH_BROWSER_TESTS") == "1":
            pytest.fail("AVMATCH_BROWSER_TESTS=1 but selenium, chromium or chromedriver is missing")
        pytest.skip("no headless browser here (selenium + chromium + chromedriver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 "--allow-file-access-from-files", "--mute-audio"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_report_in_a_real_browser_renders_sorts_filters_and_plays_a_pair(matched):
    """report.html in headless Chromium: the heat map renders, a click on a header sorts the rows, the
    filter hides rows, and a row's play button plays its silent video with its audio, the audio
    following the video at the pair's offset."""
    import time

    from selenium.webdriver.common.by import By

    _, report = matched
    browser = _browser()
    try:
        browser.get(report.resolve().as_uri())
        js = browser.execute_script
        assert js("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 100)")
        # a row's video name leads to its pair's place in the heat map: outlined, inside the picture, and
        # on the diagonal (the map's k-th row holds the k-th video by name, its chosen audio in column k)
        at = {}
        for row in browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr"):
            row.find_element(By.CSS_SELECTOR, "a[href^='#cell-']").click()
            place = js("const t = document.querySelector(':target'), i = t.parentElement.querySelector('img'); "
                       "const a = t.getBoundingClientRect(), b = i.getBoundingClientRect(); "
                       "return [t.title, getComputedStyle(t).outlineStyle, (a.left - b.left) / b.width, "
                       "(a.top - b.top) / b.height, a.width / b.width, a.height / b.height];")
            title, outline, left, top, width, height = place
            video = row.get_attribute("data-video")
            assert title.startswith(video + " + ") and outline == "solid", place
            assert 0 < left < 1 - width and 0 < top < 1 - height, place
            at[video] = (left, top, width, height)
        (left0, top0, width, height), *_ = (at[v] for v in sorted(at))
        for k, video in enumerate(sorted(at)):
            assert abs(at[video][0] - (left0 + k * width)) < 0.01 and abs(at[video][1] - (top0 + k * height)) < 0.01
        videos = lambda: js("return Array.from(document.querySelectorAll('#rows tbody tr'))"  # noqa: E731
                            ".filter(r => !r.hidden).map(r => r.dataset.video)")
        assert sorted(videos()) == ["cam/v0", "cam/v1", "cam/v2"]
        header = next(th for th in browser.find_elements(By.CSS_SELECTOR, "#rows th") if th.text == "video")
        header.click()
        assert videos() == ["cam/v0", "cam/v1", "cam/v2"]
        header.click()
        assert videos() == ["cam/v2", "cam/v1", "cam/v0"]
        box = browser.find_element(By.ID, "filter")
        box.send_keys("v1")
        assert videos() == ["cam/v1"]
        box.clear()
        box.send_keys(" ")  # oninput fires; a space is in no row's text
        js("document.getElementById('filter').value = ''; filterRows();")
        assert len(videos()) == 3

        row = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")[0]
        offset = float(row.get_attribute("data-offset"))
        row.find_element(By.TAG_NAME, "button").click()
        state = "const v = document.getElementById('pv'), a = document.getElementById('pa'); " \
                "return [v.currentTime, v.paused, a.currentTime, a.paused, v.error && v.error.code, a.error && a.error.code, " \
                "decodeURIComponent(v.src), decodeURIComponent(a.src)];"
        deadline = time.time() + 20
        while time.time() < deadline:
            v_time, v_paused, a_time, a_paused, v_error, a_error, v_src, a_src = js(state)
            assert v_error is None and a_error is None, (v_error, a_error)
            if v_time > max(offset, 0.0) + 0.6 and not a_paused:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the pair did not play: {js(state)}")
        assert not browser.find_element(By.ID, "player").get_attribute("hidden")
        assert v_src.endswith(row.get_attribute("data-video") + ".mp4") and "/audios/" in a_src
        assert not v_paused and abs(a_time - (v_time - offset)) < 0.3, (v_time, a_time, offset)
    finally:
        browser.quit()


def test_in_a_browser_a_wrong_pair_leads_to_its_red_cross_in_the_judged_heat_map(tmp_path):
    """The heat map drawn with the key (each video's true audio on the diagonal) in a report: a row's
    link leads to its pair's place, where the picture the browser shows is a red cross for a wrong
    pair and the cell's own colour for a right one."""
    import numpy as np

    from avmatch.outputs import heatmap_png

    videos, audios = ["v0", "v1", "v2"], ["a0", "a1", "a2"]
    truth, chosen = np.array([0, 1, 2]), np.array([0, 2, 1])  # v1 and v2 swapped
    scores = np.full((3, 3), np.log(1e-3))
    scores[[0, 1, 2], chosen] = 0.0
    places: dict = {}
    png = heatmap_png(scores, tmp_path / "judged.png", videos, audios, chosen, truth=truth, places=places)
    rows = [{"video": v, "audio": audios[chosen[i]], "right": bool(chosen[i] == truth[i])}
            for i, v in enumerate(videos)]
    page = html_report(tmp_path / "r.html", "judged", [{"pairs": 3}], rows, png, places=places)
    browser = _browser()  # skips where there is none, before selenium is imported
    from selenium.webdriver.common.by import By

    try:
        browser.get(page.resolve().as_uri())
        colour = {}
        for v in videos:
            browser.find_element(By.LINK_TEXT, v).click()  # the row's video name
            colour[v] = browser.execute_script(
                "const t = document.querySelector(':target'), i = t.parentElement.querySelector('img');"
                "const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;"
                "const g = c.getContext('2d'); g.drawImage(i, 0, 0);"
                "const a = t.getBoundingClientRect(), b = i.getBoundingClientRect();"
                "const x = (a.left + a.width / 2 - b.left) / b.width * c.width;"
                "const y = (a.top + a.height / 2 - b.top) / b.height * c.height;"
                "return Array.from(g.getImageData(Math.round(x), Math.round(y), 1, 1).data);")
        red = {v: c[0] > 200 and c[1] < 80 and c[2] < 80 for v, c in colour.items()}
        assert red == {"v0": False, "v1": True, "v2": True}, colour
    finally:
        browser.quit()
