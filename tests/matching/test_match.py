import csv

import numpy as np
import pytest

from avmatch.errors import AvmatchError
from avmatch.matching import MatchResult, assign, margins, normalise
from avmatch.metrics import evaluate_pairs, ranks, retrieval_metrics


def test_hungarian_beats_greedy_on_a_crafted_matrix():
    # Video 0 and 1 both like audio 0 best; greedy gives both audio 0, the assignment resolves it.
    scores = np.array([[0.9, 0.8, 0.0],
                       [0.95, 0.1, 0.0],
                       [0.0, 0.2, 0.7]])
    assert assign(scores, "greedy").tolist() == [0, 0, 2]
    assert assign(scores, "hungarian").tolist() == [1, 0, 2]


def test_assignment_non_square_leaves_videos_unmatched():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.5, 0.6]])
    chosen = assign(scores)
    assert sorted(c for c in chosen if c >= 0) == [0, 1]
    assert (chosen == -1).sum() == 1
    assert chosen.tolist() == [1, 0, -1]


def test_assignment_survives_nan_scores():
    scores = np.array([[np.nan, 1.0], [1.0, np.nan]])
    assert assign(scores).tolist() == [1, 0]
    assert assign(np.full((2, 2), np.nan)).tolist() in ([0, 1], [1, 0])


def test_unknown_method_is_a_user_error():
    with pytest.raises(AvmatchError, match="unknown assignment"):
        assign(np.zeros((2, 2)), "magic")


def test_margins_against_runner_up():
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.4]])
    m = margins(scores, np.array([0, 1]))
    assert m[0] == pytest.approx(0.4)
    assert m[1] == pytest.approx(-0.1)  # not its best audio: negative margin


def brute_force_metrics(scores, truth):
    """Loop version of top-k / MRR for cross-checking the vectorised one."""
    top1 = top5 = rr = 0.0
    for i, t in enumerate(truth):
        better = sum(1 for j in range(scores.shape[1]) if scores[i, j] >= scores[i, t])
        top1 += better <= 1
        top5 += better <= 5
        rr += 1 / better
    n = len(truth)
    return top1 / n, top5 / n, rr / n


def test_retrieval_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 3, 7, 30):
        scores = rng.normal(size=(n, n))
        truth = rng.permutation(n)
        got = retrieval_metrics(scores, truth)
        assert (got["top1"], got["top5"], got["mrr"]) == pytest.approx(brute_force_metrics(scores, truth))
        got_a2v = retrieval_metrics(scores.T[:, :], np.argsort(truth))
        assert got["a2v_top1"] == pytest.approx(got_a2v["top1"])


def test_ties_count_against_the_truth():
    assert ranks(np.zeros((3, 3)), np.arange(3)).tolist() == [3, 3, 3]


def test_evaluate_pairs_from_written_match(tmp_path):
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.7], [0.1, 0.85, 0.6]])
    result = MatchResult(["v0", "v1", "v2"], ["a0", "a1", "a2"], scores, assign(scores), "hungarian")
    written = result.write(tmp_path / "pairs.csv")
    assert all(p.exists() for p in written)
    with open(tmp_path / "pairs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["video"] for r in rows] == ["v0", "v1", "v2"]
    assert set(rows[0]) == {"video", "audio", "score", "margin"}
    key = tmp_path / "key.csv"
    key.write_text("video,audio\nv0,a0\nv1,a1\nv2,a2\n")
    metrics = evaluate_pairs(tmp_path / "pairs.csv", key)
    # Hungarian gives v1->a2, v2->a1: one of three right; top-1 rows: v0 right, v1 right, v2 wrong.
    assert metrics["one_to_one"] == pytest.approx(1 / 3)
    assert metrics["top1"] == pytest.approx(2 / 3)
    assert metrics["top5"] == 1.0
    assert {w["video"] for w in metrics["wrong"]} == {"v1", "v2"}


def test_evaluate_says_how_far_the_confidence_can_be_trusted(tmp_path, capsys):
    """With a confidence column: calibration error over ten bins and the share right at >= 0.9."""
    from avmatch.cli import main
    from avmatch.metrics import reliability

    scores = np.eye(4) * 5.0
    result = MatchResult([f"v{i}" for i in range(4)], [f"a{i}" for i in range(4)], scores, np.arange(4), "hungarian")
    result.confidence = np.array([0.95, 0.95, 0.55, 0.55])
    result.write(tmp_path / "pairs.csv")
    (tmp_path / "key.csv").write_text("video,audio\nv0,a0\nv1,a1\nv2,a3\nv3,a2\n")
    m = evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")
    # bin 0.9: confidence 0.95, all right (gap 0.05); bin 0.5: confidence 0.55, none right (gap 0.55)
    assert m["confidence_n_sure"] == 2 and m["confidence_right_when_sure"] == 1.0
    assert m["confidence_ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.55)
    assert main(["evaluate", str(tmp_path / "pairs.csv"), "--key", str(tmp_path / "key.csv")]) == 0
    assert "of the 2 pairs at >= 0.9, 1.000 right; expected calibration error 0.300" in capsys.readouterr().out
    assert reliability(np.array([np.nan, 0.2]), np.array([True, False]))["ece"] == pytest.approx(0.2)
    result.confidence = np.array([0.5, 0.5, 0.5, 0.5])  # none at >= 0.9: no share to give (and no NaN)
    result.write(tmp_path / "pairs.csv")
    m = evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")
    assert m["confidence_n_sure"] == 0 and "confidence_right_when_sure" not in m
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "pairs.csv"), "--key", str(tmp_path / "key.csv")]) == 0
    out = capsys.readouterr().out
    assert "confidence: no pair at >= 0.9; expected calibration error" in out and "nan" not in out


def test_evaluate_ranks_the_raw_and_the_normalised_scores_apart(tmp_path, capsys):
    """The course ranks the model's own scores; the assignment uses normalised ones: both are reported,
    each under its own name, and they can differ."""
    from avmatch.cli import main

    raw = np.array([[5.0, 4.0, 0.0], [4.9, 1.0, 0.0], [0.0, 0.0, 1.0]])  # v1's audio a1 ranks 2nd raw...
    normalised = np.array([[0.4, 0.6, 0.0], [0.3, 0.7, 0.0], [0.0, 0.0, 1.0]])  # ...1st once normalised
    MatchResult(["v0", "v1", "v2"], ["a0", "a1", "a2"], normalised, assign(normalised), "hungarian",
                raw).write(tmp_path / "pairs.csv")
    (tmp_path / "key.csv").write_text("video,audio\nv0,a0\nv1,a1\nv2,a2\n")
    metrics = evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")
    assert metrics["top1"] == pytest.approx(2 / 3)  # raw: v0 and v2 right
    assert metrics["normalised_top1"] == pytest.approx(2 / 3)  # normalised: v1 and v2 right
    assert metrics["mrr"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert metrics["normalised_mrr"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert main(["evaluate", str(tmp_path / "pairs.csv"), "--key", str(tmp_path / "key.csv")]) == 0
    out = capsys.readouterr().out
    assert "ranked on the model's own scores" in out and "normalised_mrr" in out


def test_the_heat_map_puts_every_choice_on_the_diagonal(tmp_path):
    from avmatch.outputs import heatmap_layout, heatmap_png

    rng = np.random.default_rng(0)
    scores = rng.random((5, 7))
    chosen = np.array([3, -1, 0, 6, 2])  # one video unmatched
    videos, audios = ["v3", "v0", "v4", "v1", "v2"], [f"a{j}" for j in (6, 5, 4, 3, 2, 1, 0)]
    rows, cols = heatmap_layout(videos, audios, chosen)
    assert [videos[i] for i in rows] == ["v0", "v1", "v2", "v3", "v4"]
    assert sorted(cols) == list(range(7))
    on_diagonal = [(i, cols[y]) for y, i in enumerate(r for r in rows if chosen[r] >= 0)]
    assert all(chosen[i] == j for i, j in on_diagonal) and len(on_diagonal) == 4
    assert [audios[j] for j in cols[4:]] == sorted(audios[j] for j in cols[4:])  # the unchosen, by id
    png = heatmap_png(np.log(scores), tmp_path / "h.png", videos, audios, chosen)
    assert png.stat().st_size > 1000


def test_the_heat_map_says_where_each_pair_is_in_the_picture(tmp_path):
    """``places``: each video's chosen cell as shares of the image; in the PNG written, the pixel at each
    place's centre is that cell's (the one bright cell of its row: yellow; a wrong choice: its red
    cross), and an unmatched video's place is its whole row."""
    import matplotlib.image

    from avmatch.outputs import heatmap_png

    chosen = np.array([2, 0, 5, -1])
    scores = np.full((4, 6), np.log(1e-3))
    scores[[0, 1, 2], [2, 0, 5]] = 0.0  # probability 1: the top of the colour bar
    places: dict = {}
    png = heatmap_png(scores, tmp_path / "h.png", ["v0", "v1", "v2", "v3"], [f"a{j}" for j in range(6)], chosen,
                      truth=np.array([2, 0, 4, 1]), places=places)
    image = matplotlib.image.imread(png)
    height, width = image.shape[:2]
    colour = {v: image[int((top + h / 2) * height), int((left + w / 2) * width), :3]
              for v, (left, top, w, h) in places.items()}
    yellow = np.array(matplotlib.colormaps["viridis"](1.0)[:3])
    assert set(places) == {"v0", "v1", "v2", "v3"}
    assert all(np.abs(colour[v] - yellow).max() < 0.05 for v in ("v0", "v1")), colour  # right: a hollow circle
    assert np.abs(colour["v2"] - [1.0, 0.0, 0.0]).max() < 0.05, colour  # wrong: the red cross at its centre
    assert np.abs(colour["v3"] - yellow).max() > 0.5  # no pair: the row, dark
    tops = [places[v][1] for v in ("v0", "v1", "v2", "v3")]
    assert tops == sorted(tops) and places["v3"][2] > 5 * places["v0"][2]  # rows in order; the whole row
    lefts = {v: places[v][0] for v in ("v0", "v1", "v2")}  # truth on the diagonal: v2's wrong a5 right of it
    assert lefts["v0"] < lefts["v1"] < lefts["v2"] and places["v2"][0] > places["v1"][0] + 1.5 * places["v1"][2]


def test_with_the_key_the_true_audio_is_on_the_diagonal_and_a_wrong_choice_off_it():
    from avmatch.outputs import heatmap_layout

    videos, audios = ["v0", "v1", "v2"], ["a0", "a1", "a2", "a3"]
    truth = np.array([0, 1, 2])
    chosen = np.array([0, 2, 1])  # v1 and v2 swapped
    rows, cols = heatmap_layout(videos, audios, chosen, truth)
    assert [cols[y] for y, i in enumerate(rows)] == [truth[i] for i in rows]  # the truth on the diagonal
    off = [(y, cols.index(chosen[i])) for y, i in enumerate(rows) if chosen[i] != truth[i]]
    assert off and all(y != x for y, x in off)  # so the wrong choices stand off it


def test_assignment_confidence_is_a_probability_that_sees_competition():
    from avmatch.matching.dense import assignment_confidence

    clear = np.array([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]])
    conf = assignment_confidence(clear, np.array([0, 1, 2]))
    assert np.all(conf > 0.99)
    # v0 and v1 both want a0 equally: neither can be sure; v2 is unaffected
    contested = np.array([[9.0, 0.0, 0.0], [9.0, 8.5, 0.0], [0.0, 0.0, 9.0]])
    conf = assignment_confidence(contested, np.array([0, 1, 2]))
    row_softmax = np.exp(8.5) / np.exp([9.0, 8.5, 0.0]).sum()
    assert conf[1] > row_softmax and conf[0] < 0.99 and conf[2] > 0.99  # a0 is v0's, so v1's a1 gains
    assert np.isnan(assignment_confidence(clear, np.array([0, -1, 2]))[1])
    wide = np.random.default_rng(0).normal(size=(4, 9))  # more audios than videos
    got = assignment_confidence(wide, assign(wide))
    assert np.all((got > 0) & (got <= 1))


def test_fit_temperature_makes_the_confidence_honest_on_known_pairs():
    """Scores with a known share of right answers: the confidence at the fitted temperature matches
    that share (overconfident scores are cooled, cautious ones sharpened), and the assignment stays."""
    from avmatch.matching.dense import assignment_confidence, fit_temperature

    rng = np.random.default_rng(1)
    n = 200
    for scale in (40.0, 0.5):  # far too sure, far too cautious
        truth_margin = rng.normal(1.0, 1.0, n)  # about 84% of true pairs beat a typical wrong one
        raw = scale * (rng.normal(size=(n, n)) + np.diag(truth_margin))
        chosen = assign(raw)
        right = chosen == np.arange(n)
        t = fit_temperature(raw)
        before = assignment_confidence(raw, chosen)
        after = assignment_confidence(raw, chosen, temperature=t)
        assert abs(after.mean() - right.mean()) < abs(before.mean() - right.mean())
        assert abs(after.mean() - right.mean()) < 0.1, (scale, t, after.mean(), right.mean())
        assert np.array_equal(assign(raw / t), chosen)


def test_match_abstains_below_min_confidence(tmp_path):
    """--min-confidence: a video no audio fits stays unmatched rather than forced onto one."""
    from avmatch.corpus import Clip, Corpus
    from avmatch.matching import MatchOptions, match_corpora

    class Fixed:  # stands in for a trained model: match_corpora only needs its scores
        pass

    import avmatch.matching as m

    # v2's audio is not in the pile: a2 and a3 fit it no better than each other
    raw = np.array([[9.0, 0.0, 0.0, 0.0], [0.0, 9.0, 0.0, 0.0], [1.0, 1.1, 1.0, 1.0]])
    videos = Corpus([Clip(f"v{i}", np.zeros((3, 2), np.float32)) for i in range(3)])
    audios = Corpus([Clip(f"a{j}", None, np.zeros((3, 2), np.float32)) for j in range(4)])
    original = m.match_dense, m.check_fits, m.capabilities
    try:
        m.match_dense = lambda *a, **k: (normalise(raw), raw, assign(normalise(raw)))
        m.check_fits = lambda *a, **k: None
        m.capabilities = lambda model: type("E", (), {"timing": False})()
        trained = type("T", (), {"model": type("M", (), {"loss": "infonce"})(), "temperature": 1.0})()  # scores, not logits
        forced = match_corpora(trained, videos, audios)
        assert list(forced.chosen[:2]) == [0, 1] and forced.chosen[2] in (2, 3) and forced.confidence[2] < 0.6
        sure = match_corpora(trained, videos, audios, MatchOptions(min_confidence=0.9))
        assert list(sure.chosen) == [0, 1, -1] and np.isnan(sure.confidence[2])
        assert sure.rows()[2]["audio"] == "" and "confidence" in sure.rows()[0]
        with pytest.raises(AvmatchError, match="min-confidence"):
            MatchOptions(min_confidence=1.5)
    finally:
        m.match_dense, m.check_fits, m.capabilities = original


def test_evaluate_refuses_its_two_files_swapped(tmp_path):
    scores = np.eye(2)
    MatchResult(["v0", "v1"], ["a0", "a1"], scores, assign(scores), "hungarian").write(tmp_path / "pairs.csv")
    (tmp_path / "key.csv").write_text("video,audio\nv0,a0\nv1,a1\n")
    assert evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")["one_to_one"] == 1.0
    with pytest.raises(AvmatchError, match="pairs.csv.*not a key"):
        evaluate_pairs(tmp_path / "key.csv", tmp_path / "pairs.csv")


def test_evaluate_rejects_a_key_without_columns(tmp_path):
    (tmp_path / "pairs.csv").write_text("video,audio,score,margin\nv0,a0,1,1\n")
    (tmp_path / "key.csv").write_text("clip,sound\nv0,a0\n")
    with pytest.raises(AvmatchError, match="key.csv.*lacks column"):
        evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")


def test_evaluate_rejects_unreadable_csv_and_bad_offsets(tmp_path):
    (tmp_path / "pairs.csv").write_bytes(b"video,audio\n\xff\xfe\x00v0,a0\n")
    (tmp_path / "key.csv").write_text("video,audio,offset_s\nv0,a0,soon\n")
    with pytest.raises(AvmatchError, match="pairs.csv: not a readable UTF-8 CSV"):
        evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")
    (tmp_path / "pairs.csv").write_text("video,audio,score,margin,offset_s,offset_conf\nv0,a0,1,1,0.5,1\n")
    with pytest.raises(AvmatchError, match="key.csv: offset_s of video 'v0' is not a number: 'soon'"):
        evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")


def test_evaluate_draws_the_judged_heat_map(tmp_path):
    from avmatch.cli import main

    rng = np.random.default_rng(1)
    raw = rng.standard_normal((12, 12)) + 4 * np.eye(12)
    raw[[3, 7]] = raw[[7, 3]]  # two videos that prefer each other's audio
    scores = normalise(raw)
    names = [f"v{i:02d}" for i in range(12)], [f"a{i:02d}" for i in range(12)]
    MatchResult(*names, scores, assign(scores), "hungarian", raw).write(tmp_path / "pairs.csv")
    (tmp_path / "key.csv").write_text("video,audio\n" + "".join(f"v{i:02d}.mp4,a{i:02d}.wav\n" for i in range(12)))
    assert main(["evaluate", str(tmp_path / "pairs.csv"), "--key", str(tmp_path / "key.csv"),
                 "--heatmap", str(tmp_path / "judged.png")]) == 0
    assert (tmp_path / "judged.png").stat().st_size > 1000


def test_top5_within_30_against_a_brute_force_count():
    from avmatch.metrics import top5_within

    rng = np.random.default_rng(5)
    scores = rng.standard_normal((70, 75))
    truth = rng.permutation(75)[:70]
    truth[3] = -1  # a video the key does not know
    known = [i for i in range(70) if truth[i] >= 0]
    hits = []
    for g in range(len(known) // 30):  # two whole groups of 30; the 9 left over are no group
        rows = known[30 * g : 30 * (g + 1)]
        for i in rows:
            rivals = [scores[i, truth[j]] for j in rows]
            hits.append(sum(r >= scores[i, truth[i]] for r in rivals) <= 5)
    assert top5_within(scores, truth) == pytest.approx(np.mean(hits))
    assert top5_within(scores[:29, :29]) is None


def test_values_not_measured_are_empty_cells_and_read_back_as_none(tmp_path):
    """An unmatched video's score, confidence and offset are NaN in memory; pairs.csv and
    placements.csv leave those cells empty (not 'nan'), and evaluate reads the file as written."""
    from avmatch.matching.locate import Placement
    from avmatch.outputs import get_writer, placements_table

    result = MatchResult(["v0", "v1"], ["a0", "a1", "a2"], np.eye(2, 3), np.array([0, -1]), "hungarian",
                         confidence=np.array([0.97, np.nan]), offset_s=np.array([0.25, np.nan]),
                         offset_conf=np.array([0.8, np.nan]))
    result.write(tmp_path / "pairs.csv", heatmap=False)
    rows = list(csv.DictReader(open(tmp_path / "pairs.csv")))
    assert rows[0]["confidence"] == "0.97" and rows[0]["offset_s"] == "0.25"
    assert rows[1]["audio"] == rows[1]["confidence"] == rows[1]["offset_s"] == rows[1]["score"] == ""
    assert "nan" not in (tmp_path / "pairs.csv").read_text()
    (tmp_path / "key.csv").write_text("video,audio,offset_s\nv0,a0,0.25\nv1,a1,0.0\n")
    metrics = evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")
    assert metrics["one_to_one"] == 0.5 and metrics["offset_within_40ms"] == 1.0
    refused = Placement("take", "", float("nan"), float("nan"), float("nan"), float("nan"), 0.0, "")
    text = get_writer("csv").text(placements_table([refused]))
    assert "nan" not in text and text.splitlines()[1].startswith("take,,,,,,0,,")
    from avmatch.report import html_report, markdown_table, placements_report

    page = placements_report(tmp_path / "loc.html", [refused]).read_text()  # the drift of a short take, unmeasured
    assert "drift_ppm" in page and ">nan<" not in page
    assert html_report(tmp_path / "m.html", "m", [{"n": 2}], result.rows()).read_text().count(">nan<") == 0
    assert "nan" not in markdown_table(result.rows())


def test_a_results_heat_map_with_the_key_places_every_pair(tmp_path):
    """Result.heatmap: the heat map beside pairs.csv, or with a key the judged one (the demo's)."""
    rng = np.random.default_rng(1)
    raw = rng.standard_normal((6, 6)) + 4 * np.eye(6)
    raw[[1, 4]] = raw[[4, 1]]  # two videos that prefer each other's audio
    scores = normalise(raw)
    result = MatchResult([f"v{i}" for i in range(6)], [f"a{i}" for i in range(6)], scores, assign(scores),
                         "hungarian", raw)
    places: dict = {}
    png = result.heatmap(tmp_path / "judged.png", key={f"v{i}": f"a{i}" for i in range(6)}, places=places)
    assert png.stat().st_size > 1000 and sorted(places) == result.video_ids
    assert result.heatmap(tmp_path / "plain.png").stat().st_size > 1000
