"""locate: short silent clips placed inside long recordings (and refused when nothing explains them)."""

import csv

import numpy as np
import pytest

from avmatch.errors import AvmatchError
from avmatch.matching.locate import RecordingIndex


def test_place_scores_are_the_mean_cosine_at_every_place_across_blocks():
    """The FFT search equals the brute-force mean of the frame products, in every block (a small
    block forces many) and up to each recording's last place."""
    rng = np.random.default_rng(0)
    recordings = [rng.normal(size=(n, 6)).astype(np.float32) for n in (300, 41, 9)]
    clip = rng.normal(size=(25, 6)).astype(np.float32)
    index = RecordingIndex(recordings, longest_clip=40, block=64)
    assert len(index.spans) > 5
    got = index.place_scores(clip)
    for rec, scores in zip(recordings, got, strict=True):
        want = [float((clip * rec[k : k + 25]).sum() / 25) for k in range(len(rec) - 25 + 1)]
        np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)
    assert len(got[2]) == 0  # a recording shorter than the clip has no place for it


def test_frame_embeddings_of_a_long_clip_do_not_depend_on_the_chunking():
    import torch

    from avmatch.checkpoint import Trained
    from avmatch.inference import frame_embeddings
    from avmatch.models import build_model

    torch.manual_seed(0)
    model = build_model("sync", 12, 8, hidden=16, embed_dim=8, audio_centre=25)
    trained = Trained(model, np.zeros(12), np.ones(12), np.zeros(8), np.ones(8),
                      video_rate_hz=25.0, audio_rate_hz=25.0)
    x = np.random.default_rng(1).normal(size=(700, 8)).astype(np.float32)
    whole = frame_embeddings(trained, [x], "audio", chunk=10_000)[0]
    pieces = frame_embeddings(trained, [x], "audio", chunk=128, margin=64)[0]
    assert whole.shape == (700, 8)
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two 60 s recordings of two generators, three clips cut from them, and a clip of a scene
    that was never recorded."""
    from avmatch.demo import scenes, worlds
    from avmatch.media import write_media

    root = tmp_path_factory.mktemp("locate")
    truth = {}
    for r, (mod, family) in enumerate([(scenes, "bounce"), (worlds, "drums")]):
        scene = mod.make_scene([r, 7], family, duration_s=60.0, size=(48, 48))
        write_media(root / "recordings" / f"rec{r}.wav", None, scene.audio, sample_rate=scene.sample_rate)
        for j, start_s in enumerate((3.0, 40.2)[: 2 - r]):
            a, b = int(start_s * scene.fps), int((start_s + 5.0) * scene.fps)
            write_media(root / "clips" / f"c{r}{j}.mp4", scene.frames[a:b], None, fps=scene.fps)
            truth[f"c{r}{j}"] = (f"rec{r}", start_s)  # ids: the file stems
    decoy = worlds.make_scene([99, 1], "drums", duration_s=5.0, size=(48, 48))
    write_media(root / "clips" / "decoy.mp4", decoy.frames, None, fps=decoy.fps)
    return root, truth


def test_locate_places_clips_and_refuses_a_clip_nothing_recorded(recorded, tmp_path, capsys):
    """`avmatch locate CLIPS RECORDINGS` with the shipped model, from media folders."""
    from avmatch.cli import main

    root, truth = recorded
    out = tmp_path / "placements.csv"
    # a minute of recording is little null to judge a place by, so the confidences here are modest (how
    # well the default --min-confidence separates takes from decoys is benchmarks/locate.py's to measure):
    # every clip's best place first, then a --min-confidence between the decoy's and the takes'
    assert main(["locate", str(root / "clips"), str(root / "recordings"), "-o", str(out), "--min-confidence", "0"]) == 0
    rows = {r["clip"]: r for r in csv.DictReader(open(out))}
    assert set(rows) == set(truth) | {"decoy"}
    for clip, (recording, start_s) in truth.items():
        assert rows[clip]["recording"] == recording, rows[clip]
        assert abs(float(rows[clip]["start_s"]) - start_s) <= 0.04, rows[clip]
        # every number to 6 significant digits, as pairs.csv writes them (start_s is numpy's float32)
        assert all(len(rows[clip][k].lstrip("-").replace(".", "").lstrip("0")) <= 6 for k in ("start_s", "end_s"))
        assert float(rows[clip]["confidence"]) > float(rows["decoy"]["confidence"])
    between = (float(rows["decoy"]["confidence"]) + min(float(rows[c]["confidence"]) for c in truth)) / 2
    capsys.readouterr()
    assert main(["locate", str(root / "clips"), str(root / "recordings"), "-o", str(out), "--min-confidence",
                 f"{between:.6f}", "--report", str(tmp_path / "report.html")]) == 0
    refused = {r["clip"]: r for r in csv.DictReader(open(out))}
    assert refused["decoy"]["recording"] == "" and all(refused[c]["recording"] == truth[c][0] for c in truth)
    # two minutes of recording are too few places to be a take's null: shuffled copies of each take fill it
    # in (_surrogates), and against them the unrecorded scene's best place is nothing
    assert refused["decoy"]["why"] == "nothing recorded resembles it", refused["decoy"]
    assert "refused" in capsys.readouterr().out
    page = (tmp_path / "report.html").read_text()  # a timeline, every clip, the refused one first
    assert "Timeline per recording" in page and "data:image/png;base64," in page
    table = page[page.index("Clips (refused first)"):]
    assert table.index("decoy") < min(table.index(c) for c in truth) and "(refused)" in table


def test_locate_format_json_writes_the_placements_rows_as_json(recorded, tmp_path, monkeypatch, capsys):
    """`avmatch locate --format json`: placements.json (by default) holds placements.csv's rows, floats as
    computed and NaN as null; the readers (mux's) take it as they take the CSV; `-o -` prints it."""
    import json

    from avmatch.cli import main
    from avmatch.outputs import read_rows

    root, truth = recorded
    common = [str(root / "clips"), str(root / "recordings"), "--min-confidence", "0"]
    monkeypatch.chdir(tmp_path)
    assert main(["locate", *common, "--format", "json"]) == 0
    doc = json.loads((tmp_path / "placements.json").read_text())
    assert list(doc) == ["placements"] and [r["clip"] for r in doc["placements"]] == sorted(set(truth) | {"decoy"})
    assert all(r["drift_ppm"] is None for r in doc["placements"])  # 5 s takes: too short to measure
    assert main(["locate", *common]) == 0  # placements.csv: the same rows
    as_json, as_csv = read_rows(tmp_path / "placements.json", ("clip",)), read_rows(tmp_path / "placements.csv", ("clip",))
    for got, want in zip(as_json, as_csv, strict=True):
        assert list(got) == list(want) and all(got[k] == want[k] or float(got[k]) == pytest.approx(float(want[k]), rel=1e-5)
                                               for k in got)
    assert list(csv.DictReader(open(tmp_path / "placements.csv")))[0]["drift_ppm"] == ""
    capsys.readouterr()
    assert main(["locate", *common, "--format", "json", "-o", "-"]) == 0
    assert capsys.readouterr().out == (tmp_path / "placements.json").read_text()

def test_recordings_searched_a_group_at_a_time_give_the_same_placements(recorded):
    """An archive too large for memory is searched in groups of recordings: one recording a group
    places every clip exactly where one group of all of them does."""
    import avmatch
    from avmatch.matching.locate import locate

    root, _ = recorded
    model = avmatch.load("default")
    clips, recordings = model.features(root / "clips"), model.features(root / "recordings")
    whole = locate(model.trained, clips, recordings, min_confidence=0.0)
    apart = locate(model.trained, clips, recordings, min_confidence=0.0, group_frames=1)
    assert [(p.clip, p.recording, p.start_s) for p in apart] == [(p.clip, p.recording, p.start_s) for p in whole]
    np.testing.assert_allclose([p.confidence for p in apart], [p.confidence for p in whole], rtol=1e-6)
    assert all(abs(p.recording_s - 60.0) < 0.1 for p in whole)  # each best place's recording, its whole length


def test_the_report_timeline_shows_each_recording_whole_with_its_takes_and_refused_best_places():
    """A take 100 s into a 300 s recording is drawn where it sits in the whole recording, not on an
    axis that spans the take alone; a refused take's best place is drawn too."""
    from matplotlib.patches import Rectangle

    from avmatch.matching.locate import Placement
    from avmatch.report import timeline_figure

    placed = Placement("t1", "day", 100.0, 104.0, 0.5, 9.0, 0.97, "day", recording_s=300.0)
    refused = Placement("t2", "", 20.0, 26.0, 0.2, 2.0, 0.3, "night", why="not sure", recording_s=50.0)
    ax = timeline_figure([placed, refused]).axes[0]
    lo, hi = ax.get_xlim()
    assert lo == 0.0 and hi >= 300.0
    bars = sorted((round(r.get_x(), 3), round(r.get_width(), 3), round(r.get_y() + r.get_height() / 2))
                  for r in ax.patches if isinstance(r, Rectangle))
    assert bars == [(0.0, 50.0, 1), (0.0, 300.0, 0), (20.0, 6.0, 1), (100.0, 4.0, 0)]  # day, night: each whole
    assert [t.get_text() for t in ax.get_yticklabels()] == ["day", "night"]
    assert timeline_figure([Placement("t3", "", float("nan"), float("nan"), 0.0, 0.0, 0.0, "")]) is None


def test_two_takes_of_one_camera_are_never_placed_on_top_of_each_other(recorded, tmp_path):
    """The same take twice: as takes of one camera (one folder) only the first keeps the place;
    as clips of unknown cameras both are placed there."""
    import shutil

    import avmatch

    root, truth = recorded
    for cam in ("cam1", "cam2"):
        (tmp_path / "takes" / cam).mkdir(parents=True)
    shutil.copy(root / "clips" / "c00.mp4", tmp_path / "takes" / "cam1" / "a.mp4")
    shutil.copy(root / "clips" / "c00.mp4", tmp_path / "takes" / "cam1" / "b.mp4")
    shutil.copy(root / "clips" / "c00.mp4", tmp_path / "takes" / "cam2" / "c.mp4")
    model = avmatch.load("default")
    # every take at its best place (a minute of recording is little evidence: the confidences are modest)
    placed = {p.clip: p for p in model.locate(tmp_path / "takes", root / "recordings", min_confidence=0.0)}
    a, b = placed["cam1/a"], placed["cam1/b"]
    at_truth = [p for p in (a, b) if p.recording == "rec0" and abs(p.start_s - truth["c00"][1]) <= 0.04]
    assert len(at_truth) == 1  # one camera, one place at a time
    other = b if at_truth[0] is a else a
    # never moved to a place that is not its best: refused, saying why and naming its best place
    assert other.recording == "" and other.why.startswith("camera cam1 busy there")
    assert other.best_recording == "rec0" and abs(other.start_s - truth["c00"][1]) <= 0.04
    assert placed["cam2/c"].recording == "rec0" and abs(placed["cam2/c"].start_s - truth["c00"][1]) <= 0.04
    free = {p.clip: p for p in model.locate(tmp_path / "takes", root / "recordings", camera=False, min_confidence=0.0)}
    assert all(free[c].recording == "rec0" for c in ("cam1/a", "cam1/b", "cam2/c"))


def test_locate_refuses_bad_requests_with_one_line(recorded, tmp_path):
    import avmatch

    root, _ = recorded
    model = avmatch.load("default")
    with pytest.raises(AvmatchError, match="min-confidence"):
        model.locate(root / "clips", root / "recordings", min_confidence=2.0)
    with pytest.raises(AvmatchError, match="no recording with audio"):
        model.locate(root / "clips", root / "clips")  # silent videos where recordings are wanted


def test_reverse_places_audio_snippets_inside_long_silent_videos(tmp_path):
    """--reverse: a sound snippet found in the long silent video it was recorded with."""
    from avmatch.cli import main
    from avmatch.demo import worlds
    from avmatch.media import write_media

    scene = worlds.make_scene([3, 3], "drums", duration_s=60.0, size=(48, 48))
    write_media(tmp_path / "videos" / "long.mp4", scene.frames, None, fps=scene.fps)
    rate = scene.sample_rate
    write_media(tmp_path / "snippets" / "s1.wav", None, scene.audio[int(21.0 * rate) : int(27.0 * rate)], sample_rate=rate)
    out = tmp_path / "placements.csv"
    assert main(["locate", str(tmp_path / "snippets"), str(tmp_path / "videos"), "--reverse", "-o", str(out),
                 "--min-confidence", "0"]) == 0  # its best place (one snippet in a minute: modest confidence)
    (row,) = csv.DictReader(open(out))
    assert row["clip"] == "s1" and row["recording"] == "long" and abs(float(row["start_s"]) - 21.0) <= 0.04, row


def test_a_long_take_gets_its_drift_measured_and_mux_corrects_it(tmp_path):
    """A recorder whose clock runs 1000 ppm fast: a 2-minute take drifts 120 ms along it. locate
    measures the drift; mux stretches the recording's audio so the take's end is in sync too."""
    from avmatch.cli import main
    from avmatch.demo import scenes
    from avmatch.media import read_audio, write_media

    ppm = 1000.0
    scene = scenes.make_scene([8, 2], "bounce", duration_s=150.0, size=(48, 48))
    rate = scene.sample_rate
    k = 1 + ppm * 1e-6  # a sound at scene time s is at recording time s * k
    recording = np.interp(np.arange(int(len(scene.audio) * k)) / k, np.arange(len(scene.audio)), scene.audio)
    write_media(tmp_path / "rec" / "day.wav", None, recording.astype(np.float32), sample_rate=rate)
    write_media(tmp_path / "takes" / "t.mp4", scene.frames[250:3250], None, fps=scene.fps)  # scene 10 s .. 130 s
    out = tmp_path / "placements.csv"
    assert main(["locate", str(tmp_path / "takes"), str(tmp_path / "rec"), "-o", str(out), "--min-confidence", "0.5"]) == 0
    (row,) = csv.DictReader(open(out))
    assert row["recording"] == "day" and abs(float(row["start_s"]) - 10.0 * k) <= 0.04, row
    assert abs(float(row["drift_ppm"]) - ppm) <= 300, row
    assert main(["mux", str(out), str(tmp_path / "takes"), str(tmp_path / "rec"), "-o", str(tmp_path / "out")]) == 0
    back = read_audio(tmp_path / "out" / "t.mp4", rate)
    truth = scene.audio[int(10.0 * rate) : int(130.0 * rate)]
    tail = slice(int(110 * rate), int(118 * rate))  # near the end, where uncorrected it would be 110 ms off

    def lag(a, b, max_lag):
        a, b = a - a.mean(), b - b.mean()
        return max(range(-max_lag, max_lag + 1), key=lambda d: float(np.dot(a[max(0, -d) : len(a) - max(0, d)],
                                                                             b[max(0, d) : len(b) - max(0, -d)])))

    assert abs(lag(truth[tail], back[tail], int(0.2 * rate))) / rate <= 0.025


def test_match_finds_an_offset_of_a_minute_and_the_drift_of_long_pairs(tmp_path):
    """Two long takes whose audio starts a minute before the picture, on a recorder running 1000 ppm
    fast: match (the shipped model, --max-offset 90 s: an FFT search) pairs them, puts each offset
    at the start of the take and measures the drift; mux reads the drift from pairs.csv."""
    from avmatch.cli import main
    from avmatch.demo import scenes
    from avmatch.media import write_media

    ppm, k = 1000.0, 1.001
    for n, seed in enumerate((3, 4)):
        scene = scenes.make_scene([seed, 9], "bounce", duration_s=135.0, size=(48, 48))
        rate = scene.sample_rate
        recording = np.interp(np.arange(int(len(scene.audio) * k)) / k, np.arange(len(scene.audio)), scene.audio)
        write_media(tmp_path / "audios" / f"a{n}.wav", None, recording.astype(np.float32), sample_rate=rate)
        write_media(tmp_path / "videos" / f"v{n}.mp4", scene.frames[1500:3250], None, fps=scene.fps)  # 60 s .. 130 s
    out = tmp_path / "pairs.csv"
    assert main(["match", str(tmp_path / "videos"), str(tmp_path / "audios"), "-o", str(out),
                 "--max-offset", "90"]) == 0
    rows = {r["video"]: r for r in csv.DictReader(open(out))}
    for n in (0, 1):
        row = rows[f"v{n}"]
        # the offset is the drift line's intercept at the take's start: within a 25 Hz frame and a bit
        assert row["audio"] == f"a{n}" and abs(float(row["offset_s"]) + 60.0 * k) <= 0.05, row
        assert abs(float(row["drift_ppm"]) - ppm) <= 300, row
    from avmatch.mux import read_jobs

    assert [round(j.stretch, 4) for j in read_jobs(out)[0]] == [round(1 + float(rows[f"v{n}"]["drift_ppm"]) * 1e-6, 4)
                                                             for n in (0, 1)]


def test_lead_confidences_are_the_chance_the_best_place_is_right():
    """Leads of wrong best places are standard exponentials (by construction); right ones lie far
    out. Over a run of both the confidence is a probability: of those at >= 0.9 nearly all right,
    and a run of unrecorded takes alone is refused; one take alone is judged by the prior."""
    from avmatch.matching.locate import lead_confidences

    rng = np.random.default_rng(0)
    wrong, right = rng.exponential(1.0, 300), rng.gamma(4.0, 3.0, 300)
    conf = lead_confidences(np.r_[wrong, right])
    truth = np.r_[np.zeros(300), np.ones(300)]
    sure = conf >= 0.9
    assert sure.sum() > 200 and truth[sure].mean() >= 0.97
    for lo, hi in ((0.0, 0.1), (0.1, 0.5), (0.5, 0.9), (0.9, 1.01)):  # calibrated band by band
        band = (conf >= lo) & (conf < hi)
        if band.sum() >= 20:
            assert abs(truth[band].mean() - conf[band].mean()) < 0.15, (lo, truth[band].mean(), conf[band].mean())
    assert (lead_confidences(wrong) >= 0.5).mean() < 0.03  # a run of unrecorded takes alone
    assert lead_confidences(np.array([15.0]))[0] > 0.95 and lead_confidences(np.array([0.5]))[0] < 0.1
    assert lead_confidences(np.array([np.nan, 15.0]))[0] == 0.0  # too few places to tell: refused


def test_a_refusal_says_whether_the_take_is_unsure_or_like_nothing_recorded():
    """Below --min-confidence a take is "not sure"; far below (UNLIKE) nothing recorded resembles it;
    either way its best place is kept for a person to look at."""
    from types import SimpleNamespace

    from avmatch.matching.locate import UNLIKE, _choose

    clips = [SimpleNamespace(id=f"t{i}") for i in range(3)]
    recs = [SimpleNamespace(id="day")]
    best = [(0, 10.0, 0.5, 6.0, 0.97), (0, 30.0, 0.3, 4.0, 0.3), (0, 50.0, 0.2, 3.0, UNLIKE / 2)]
    got = _choose(clips, recs, [np.zeros((100, 4))] * 3, best, 25.0, 0.5, False)
    assert [(p.recording, p.why) for p in got] == [("day", ""), ("", "not sure"), ("", "nothing recorded resembles it")]
    assert [p.best_recording for p in got] == ["day"] * 3 and got[2].start_s == 50.0


def test_surrogates_fill_in_the_null_only_where_the_recordings_are_too_short():
    """A take's surrogates are its own frames in shuffled blocks, no block in its place; as many as
    bring its null to NULL_MIN places (at most SURROGATES), and none against an hour of recordings."""
    from avmatch.matching.locate import NULL_MIN, SURROGATES, _places, _surrogates

    clip = np.random.default_rng(0).standard_normal((150, 8)).astype(np.float32)  # 6 s at 25 Hz
    assert _places(150, [25 * 3600], 25.0) > NULL_MIN and _surrogates(clip, _places(150, [25 * 3600], 25.0), 25.0, 0) == []
    assert _places(150, [100], 25.0) == 0 and _surrogates(clip, 0, 25.0, seed=0) == []  # shorter than the take
    places = _places(150, [25 * 40], 25.0)  # 40 s: 850 starts, a peak every 99 frames at most
    assert places == 9
    short = _surrogates(clip, places, 25.0, seed=0)
    assert len(short) == min(SURROGATES, -(-NULL_MIN // places))
    blocks = np.linspace(0, 150, 7).astype(int)  # 6 blocks of a second
    for x in short:
        assert x.shape == clip.shape
        np.testing.assert_array_equal(np.sort(x, axis=0), np.sort(clip, axis=0))  # the same frames
        for a, b in zip(blocks[:-1], blocks[1:], strict=True):
            assert not np.array_equal(x[a:b], clip[a:b])  # no block where it was
    assert not np.array_equal(short[0], short[1])
