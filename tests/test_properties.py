"""Property and fuzz tests (hypothesis): the matching stays a valid assignment for any score matrix,
and the corpus readers turn any input into a corpus or one clear line, never another exception."""

from __future__ import annotations

import itertools
import json
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from avmatch.corpus import MANIFEST, Corpus, load_array, load_corpus, read_manifest, write_corpus
from avmatch.errors import AvmatchError
from avmatch.matching import MatchResult, assign, margins, normalise

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -------------------------------------------------------------------------------------- matching

special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 1e300, -1e300, 5e-324])
cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), special)


@st.composite
def score_matrices(draw, max_side: int = 7, finite: bool = False):
    n, m = draw(st.integers(0, max_side)), draw(st.integers(0, max_side))
    if draw(st.booleans()):  # few distinct values: many ties
        values = st.sampled_from(draw(st.lists(st.floats(-3, 3), min_size=1, max_size=3)))
    else:
        values = st.floats(-1e6, 1e6) if finite else cell
    return draw(hnp.arrays(np.float64, (n, m), elements=values))


def check_assignment(scores: np.ndarray, chosen: np.ndarray) -> None:
    n, m = scores.shape
    assert chosen.shape == (n,) and chosen.dtype.kind == "i"
    assert ((chosen >= -1) & (chosen < m)).all()
    used = chosen[chosen >= 0]
    assert len(set(used.tolist())) == len(used), "an audio given to two videos"
    assert len(used) == min(n, m), "a one-to-one assignment matches min(N, M) pairs"


@FAST
@given(score_matrices())
def test_hungarian_is_always_a_valid_one_to_one_assignment(scores):
    chosen = assign(scores)
    check_assignment(scores, chosen)
    result = MatchResult([f"v{i}" for i in range(scores.shape[0])], [f"a{j}" for j in range(scores.shape[1])],
                         scores, chosen, "hungarian")
    unmatched_videos = [r["video"] for r in result.rows() if not r["audio"]]
    assert unmatched_videos == [f"v{i}" for i in np.flatnonzero(chosen < 0)]
    assert len(unmatched_videos) == max(0, scores.shape[0] - scores.shape[1])
    assert sorted(result.unmatched_audios()) == sorted(f"a{j}" for j in set(range(scores.shape[1])) - set(chosen.tolist()))
    assert len(result.unmatched_audios()) == max(0, scores.shape[1] - scores.shape[0])


@FAST
@given(score_matrices(max_side=5, finite=True))
def test_hungarian_is_optimal_against_brute_force(scores):
    n, m = scores.shape
    chosen = assign(scores)
    total = sum(scores[i, j] for i, j in enumerate(chosen) if j >= 0)
    best = -np.inf
    if min(n, m) == 0:
        best = 0.0
    elif n <= m:
        for cols in itertools.permutations(range(m), n):
            best = max(best, sum(scores[i, c] for i, c in enumerate(cols)))
    else:
        for rows in itertools.permutations(range(n), m):
            best = max(best, sum(scores[r, j] for j, r in enumerate(rows)))
    assert total == pytest.approx(best, rel=1e-9, abs=1e-6)


@FAST
@given(score_matrices())
def test_nan_and_inf_scores_rank_below_every_real_score(scores):
    n, m = scores.shape
    assume(n and m)
    chosen = assign(scores)
    real = np.isfinite(scores)
    # a bad score is chosen only where no assignment of that size avoids it: with one video, never if
    # its row has a real score
    if n == 1 and real[0].any():
        assert real[0, chosen[0]]


@FAST
@given(score_matrices())
def test_greedy_gives_each_video_an_audio_in_range(scores):
    n, m = scores.shape
    chosen = assign(scores, "greedy")
    assert chosen.shape == (n,)
    if m == 0:
        assert (chosen == -1).all()
    else:
        assert ((chosen >= 0) & (chosen < m)).all()
        real = np.where(np.isfinite(scores), scores, -np.inf)  # NaN and inf rank below every real score
        for i, j in enumerate(chosen):
            assert real[i, j] == real[i].max()


@FAST
@given(score_matrices())
def test_normalised_scores_have_no_nan_and_keep_the_shape(scores):
    out = normalise(scores)
    assert out.shape == scores.shape
    assert not np.isnan(out).any()
    check_assignment(out, assign(out))


@FAST
@given(score_matrices())
def test_margins_are_nan_exactly_for_unmatched_videos(scores):
    chosen = assign(scores)
    m = margins(scores, chosen)
    assert m.shape == chosen.shape
    if scores.shape[1] >= 2:
        assert np.isnan(m[chosen < 0]).all()


# ------------------------------------------------------------------------------ corpus readers


def _one_line(err: AvmatchError, root: Path) -> None:
    text = str(err)
    assert "\n" not in text and str(root) in text, text


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
path_text = st.text(alphabet=string.ascii_lowercase[:3] + "./\\~$\0 ", max_size=14) | st.sampled_from(
    ["arrays/v.npy", "../outside.npy", "/etc/passwd", "arrays/../../outside.npy", "", ".", "arrays", "arrays/a.npy"])


@st.composite
def manifest_rows(draw):
    row = {"clip": draw(st.sampled_from(["a", "b", 7]) | json_values),
           "modality": draw(st.sampled_from(["video", "audio"]) | json_values),
           "file": draw(path_text | json_values),
           "rate_hz": draw(st.sampled_from([1.0, 25, -1, 0]) | json_values)}
    for key in draw(st.sets(st.sampled_from(list(row)), max_size=2)):
        del row[key]
    return row


@st.composite
def manifest_text(draw) -> bytes:
    lines = draw(st.lists(st.one_of(manifest_rows().map(json.dumps), json_values.map(json.dumps),
                                    st.text(max_size=30)), max_size=6))
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n"]))
    data = text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else text.encode("utf-8", "replace")
    if draw(st.booleans()):
        data += draw(st.binary(max_size=12))
    return data


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    """A corpus folder with arrays/v.npy and arrays/a.npy (zeros) beside a secret outside it (ones)."""
    base = tmp_path_factory.mktemp("fuzz")
    root = base / "corpus"
    (root / "arrays").mkdir(parents=True)
    np.save(root / "arrays" / "v.npy", np.zeros((3, 4), np.float32))
    np.save(root / "arrays" / "a.npy", np.zeros((3, 2), np.float32))
    np.save(base / "outside.npy", np.ones((3, 4), np.float32))
    return root


@FAST
@given(data=manifest_text())
def test_any_manifest_gives_a_corpus_or_one_line(fuzz_root, data):
    (fuzz_root / MANIFEST).write_bytes(data)
    try:
        rows = read_manifest(fuzz_root)
    except AvmatchError as err:
        _one_line(err, fuzz_root)
        rows = None
    if rows is not None:
        for row in rows:
            assert isinstance(row["file"], str) and not Path(row["file"]).is_absolute()
            assert ".." not in Path(row["file"]).parts
            assert row["rate_hz"] > 0 and row["modality"] in ("video", "audio")
    try:
        corpus = load_corpus(fuzz_root)
    except AvmatchError as err:
        _one_line(err, fuzz_root)
        return
    assert isinstance(corpus, Corpus) and corpus.clips
    for clip in corpus.clips:  # only the arrays inside the folder (zeros), never the secret (ones)
        for x in (clip.video, clip.audio):
            assert x is None or (x.dtype == np.float32 and not x.any())


@FAST
@given(file=path_text)
def test_no_manifest_path_leaves_the_corpus(fuzz_root, file):
    row = {"clip": "x", "modality": "video", "file": file, "rate_hz": 1.0}
    (fuzz_root / MANIFEST).write_text(json.dumps(row) + "\n")
    try:
        corpus = load_corpus(fuzz_root)
    except AvmatchError as err:
        _one_line(err, fuzz_root)
        return
    assert not corpus.clips[0].video.any()


npy_dtypes = st.sampled_from(["<f4", ">f4", "<f8", "<f2", "|u1", "<i8", "|b1", "<c8", "|O", "<U3", "|V4"])


@st.composite
def npy_bytes(draw) -> bytes:
    import io

    from numpy.lib import format as npformat

    buf = io.BytesIO()
    shape = tuple(draw(st.lists(st.integers(0, 6) | st.sampled_from([10**9, 2**62]), max_size=3)))
    header = {"descr": draw(npy_dtypes), "fortran_order": draw(st.booleans()), "shape": shape}
    if draw(st.booleans()):
        npformat.write_array_header_1_0(buf, header)
    else:
        buf.write(b"\x93NUMPY\x01\x00" + draw(st.binary(min_size=2, max_size=2)) + draw(st.binary(max_size=40)))
    buf.write(draw(st.binary(max_size=200)))
    data = buf.getvalue()
    if draw(st.booleans()):  # a few flipped bytes anywhere
        data = bytearray(data)
        for pos in draw(st.lists(st.integers(0, max(0, len(data) - 1)), max_size=3)):
            if data:
                data[pos] ^= 0xFF
        data = bytes(data)
    return data


@FAST
@given(data=npy_bytes())
def test_any_npy_bytes_give_a_float_matrix_or_one_line(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.npy"
    path.write_bytes(data)
    try:
        x = load_array(path)
    except AvmatchError as err:
        _one_line(err, path)
        return
    assert x.dtype == np.float32 and x.ndim == 2 and x.size and np.isfinite(x).all()


@FAST
@given(arr=hnp.arrays(st.sampled_from([np.float16, np.float32, np.float64, np.uint8]),
                      hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5)))
def test_any_saved_array_round_trips_or_is_refused(tmp_path_factory, arr):
    path = tmp_path_factory.getbasetemp() / "arr.npy"
    np.save(path, arr)
    try:
        x = load_array(path)
    except AvmatchError as err:
        _one_line(err, path)
        with np.errstate(over="ignore"):
            assert arr.ndim != 2 or 0 in arr.shape or not np.isfinite(arr.astype(np.float32)).all()
        return
    assert x.shape == arr.shape and x.dtype == np.float32
    if arr.dtype != np.uint8:
        np.testing.assert_array_equal(x, arr.astype(np.float32))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5, unique=True))
def test_any_clip_ids_round_trip(tmp_path_factory, ids):
    from avmatch.corpus import Clip

    root = tmp_path_factory.mktemp("ids")
    clips = [Clip(i, np.full((2, 3), k, np.float32), np.full((2, 2), k, np.float32)) for k, i in enumerate(ids)]
    write_corpus(Corpus(clips), root)
    back = load_corpus(root)
    assert [c.id for c in back.clips] == ids
    for k, c in enumerate(back.clips):
        assert (c.video == k).all() and (c.audio == k).all()
    assert all(p.resolve().is_relative_to(root.resolve()) for p in root.rglob("*"))


# ------------------------------------------------------------- hand-edited CSVs (mux, evaluate)

csv_value = st.one_of(st.sampled_from(["nan", "inf", "-inf", "1e12", "-1e308", "", "  ", "0", "-5", "1.5", "x",
                                       "v1", "v2", "a1", "a2", "v1.mp4", "a1.flac", "\u00e9", "1,5"]),
                      st.text(alphabet=string.printable, max_size=8))


@st.composite
def hand_edited_csv(draw, columns: tuple[str, ...]) -> str:
    header = draw(st.lists(st.sampled_from(columns + ("extra", "")), min_size=1, max_size=len(columns) + 1))
    rows = draw(st.lists(st.lists(csv_value, min_size=0, max_size=len(header) + 1), max_size=6))
    quote = lambda v: '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n\r') else v  # noqa: E731
    return "\n".join(",".join(quote(v) for v in row) for row in [header, *rows]) + "\n"


@FAST
@given(text=hand_edited_csv(("video", "audio", "offset_s", "drift_ppm", "clip", "recording", "start_s")))
def test_mux_reads_any_hand_edited_csv_as_jobs_or_one_line(tmp_path, text):
    from avmatch.mux import MAX_DRIFT_PPM, read_jobs

    path = tmp_path / "pairs.csv"
    path.write_text(text, encoding="utf-8")
    try:
        jobs, _ = read_jobs(path)
    except AvmatchError as err:
        assert "\n" not in str(err)
        return
    for job in jobs:  # what mux acts on is always finite and bounded
        assert job.video_id and job.audio_id and np.isfinite(job.shift_s)
        assert abs(job.stretch - 1.0) <= MAX_DRIFT_PPM * 1e-6 + 1e-12


@FAST
@given(pairs=hand_edited_csv(("video", "audio", "offset_s", "confidence")),
       key=hand_edited_csv(("video", "audio", "offset_s")))
def test_evaluate_reads_any_hand_edited_pair_of_csvs_as_metrics_or_one_line(tmp_path, pairs, key):
    from avmatch.metrics import evaluate_pairs

    (tmp_path / "pairs.csv").write_text(pairs, encoding="utf-8")
    (tmp_path / "key.csv").write_text(key, encoding="utf-8")
    try:
        got = evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")
    except AvmatchError as err:
        assert "\n" not in str(err)
        return
    assert 0.0 <= got["one_to_one"] <= 1.0 and got["pairs"] >= 1
    for k, v in got.items():
        if isinstance(v, float) and k.startswith("offset"):
            assert np.isfinite(v)
