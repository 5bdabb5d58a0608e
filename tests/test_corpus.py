"""Feature corpora on disk: avmatch's own format, the course's layouts, and every bad file as one line."""

import json

import numpy as np
import pytest

from avmatch.corpus import (
    Clip,
    Corpus,
    append_clip,
    dequantize,
    done_entries,
    load_corpus,
    read_manifest,
    write_corpus,
)
from avmatch.errors import AvmatchError
from avmatch.testing.featuregen import make_feature_corpus, shuffle_for_matching, write_key


def classic(root, clips=3, t=6, vdim=1024, adim=128, dtype=np.float32):
    rng = np.random.default_rng(0)
    for i in range(clips):
        d = root / f"{i:04d}"
        d.mkdir(parents=True)
        for name, dim in (("vfeat.npy", vdim), ("afeat.npy", adim)):
            x = rng.uniform(-2, 2, (t, dim))
            np.save(d / name, (rng.integers(0, 256, (t, dim)) if dtype == np.uint8 else x).astype(dtype))
    return root


def one_line(fn, *fragments):
    with pytest.raises(AvmatchError) as err:
        fn()
    text = str(err.value)
    assert "\n" not in text, text
    for f in fragments:
        assert f in text, text
    return text


def test_own_format_round_trip(tmp_path):
    corpus = make_feature_corpus(12, video_dim=10, audio_dim=6, min_len=3, max_len=9, seed=1)
    corpus.clips[0].audio = None  # a silent video
    corpus.clips[1] = Clip("sub/dir clip", audio=corpus.clips[1].audio)  # a lone audio, odd id
    write_corpus(corpus, tmp_path / "c")
    back = load_corpus(tmp_path / "c")
    assert [c.id for c in back.clips] == [c.id for c in corpus.clips]
    for a, b in zip(corpus.clips, back.clips, strict=True):
        for m in ("video", "audio"):
            x, y = getattr(a, m), getattr(b, m)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)
    assert back.extractor["name"] == "synthetic" and (back.video_dim, back.audio_dim) == (10, 6)
    assert len(back.paired().clips) == 10


def test_classic_layouts_and_file_list(tmp_path):
    root = classic(tmp_path / "course")
    corpus = load_corpus(root)
    assert [c.id for c in corpus.clips] == ["0000", "0001", "0002"]
    assert corpus.clips[0].video.shape == (6, 1024) and corpus.clips[0].audio.shape == (6, 128)
    flat = tmp_path / "flat"
    for m in ("vfeat", "afeat"):
        (flat / m).mkdir(parents=True)
        for i in range(2):
            np.save(flat / m / f"{i:04d}.npy", np.zeros((5, 1024 if m == "vfeat" else 128), np.float32))
    assert [c.id for c in load_corpus(flat).clips] == ["0000", "0001"]
    lst = tmp_path / "train.txt"
    lst.write_text("course/0002\n\n# a comment\ncourse/0000\n")
    assert [c.id for c in load_corpus(lst).clips] == ["course/0002", "course/0000"]


def test_uint8_is_dequantised_like_youtube8m(tmp_path):
    corpus = load_corpus(classic(tmp_path / "q", dtype=np.uint8))
    x = corpus.clips[0].video
    assert x.dtype == np.float32 and -2 < x.min() < -1.9 and 1.9 < x.max() < 2.01
    assert dequantize(np.array([0, 128, 255], np.uint8)).tolist() == pytest.approx([-2 + 4 / 512, 4 / 512 + 4 * 128 / 255 - 2,
                                                                                   2 + 4 / 512], abs=1e-6)


@pytest.mark.parametrize("fault, fragments", [
    ("shape", ["vfeat.npy", "(T, D)"]),
    ("nan", ["afeat.npy", "NaN"]),
    ("inf", ["vfeat.npy", "NaN or inf"]),
    ("dtype", ["vfeat.npy", "dtype int64"]),
    ("object", ["afeat.npy", "pickled"]),
    ("missing", ["0001", "no afeat.npy"]),
    ("rows", ["0000", "rows"]),
    ("dims", ["0001", "dims"]),
    ("junk", ["vfeat.npy", "not a readable .npy"]),
])
def test_bad_feature_files_are_one_line_errors(tmp_path, fault, fragments):
    root = classic(tmp_path / "c", clips=2)
    v, a = root / "0000" / "vfeat.npy", root / "0000" / "afeat.npy"
    if fault == "shape":
        np.save(v, np.zeros((6, 4, 3), np.float32))
    elif fault == "nan":
        x = np.zeros((6, 128), np.float32)
        x[3, 5] = np.nan
        np.save(a, x)
    elif fault == "inf":
        x = np.zeros((6, 1024), np.float32)
        x[0, 0] = np.inf
        np.save(v, x)
    elif fault == "dtype":
        np.save(v, np.zeros((6, 1024), np.int64))
    elif fault == "object":
        np.save(a, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif fault == "missing":
        (root / "0001" / "afeat.npy").unlink()
    elif fault == "rows":
        np.save(a, np.zeros((5, 128), np.float32))
    elif fault == "dims":
        np.save(root / "0001" / "vfeat.npy", np.zeros((6, 512), np.float32))
    elif fault == "junk":
        v.write_bytes(b"\x93NUMPY garbage")
    one_line(lambda: load_corpus(root), *fragments)


def test_empty_and_missing_corpora(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line(lambda: load_corpus(tmp_path / "empty"), "empty corpus")
    one_line(lambda: load_corpus(tmp_path / "nope"), "no such corpus")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.jsonl").write_text("")
    one_line(lambda: load_corpus(tmp_path / "m"), "empty corpus")


def test_manifest_paths_cannot_leave_the_corpus(tmp_path):
    outside = tmp_path / "secret.npy"
    np.save(outside, np.zeros((3, 4), np.float32))
    for rel in ("../secret.npy", str(outside)):
        root = tmp_path / f"c{len(rel)}"
        root.mkdir()
        (root / "manifest.jsonl").write_text(json.dumps({"clip": "x", "modality": "video", "file": rel,
                                                         "rate_hz": 1.0}) + "\n")
        one_line(lambda root=root: load_corpus(root), "leaves the corpus folder")
    lst = tmp_path / "sub" / "list.txt"
    lst.parent.mkdir()
    lst.write_text("../c14\n")
    one_line(lambda: load_corpus(lst), "list.txt", "leaves the corpus folder")


def test_manifest_append_resume_and_torn_line(tmp_path):
    root = tmp_path / "c"
    rates = {"video": 25.0, "audio": 25.0}
    append_clip(root, "a", {"video": np.ones((4, 3)), "audio": np.ones((4, 2))}, rates_hz=rates,
                source="/m/a.mp4", extractor="default", extractor_version=1)
    append_clip(root, "b", {"video": np.ones((4, 3)), "audio": np.ones((4, 2))}, rates_hz=rates,
                source="/m/b.mp4", extractor="default", extractor_version=1)
    append_clip(root, "c", {"audio": np.ones((5, 2))}, rates_hz=rates, source="/m/c.wav")
    lines = (root / "manifest.jsonl").read_text().splitlines(keepends=True)
    # a crash that kept b's video line but tore its audio line: b is not done, a and c are
    (root / "manifest.jsonl").write_text("".join(lines[:3] + [lines[4]]) + lines[3][:25])
    assert len(read_manifest(root)) == 4
    assert set(done_entries(root)) == {"/m/a.mp4", "/m/c.wav"}
    corpus = load_corpus(root)
    assert corpus.video_rate_hz == 25.0 and corpus.clips[0].video.shape == (4, 3)
    assert [(c.id, c.video is None, c.audio is None) for c in corpus.clips] == [("a", False, False), ("c", True, False)]
    (root / "manifest.jsonl").write_text('{"clip": "a"\n{"clip": "b", "modality": "video"}\n')
    one_line(lambda: load_corpus(root), "manifest.jsonl", "line 1")


def test_generated_corpus_is_linked_and_shuffles(tmp_path):
    corpus = make_feature_corpus(20, video_dim=16, audio_dim=8, min_len=5, max_len=10, seed=2)
    lengths = {len(c.video) for c in corpus.clips}
    assert len(lengths) > 1 and all(len(c.video) == len(c.audio) for c in corpus.clips)
    again = make_feature_corpus(20, video_dim=16, audio_dim=8, min_len=5, max_len=10, seed=2)
    np.testing.assert_array_equal(corpus.clips[3].audio, again.clips[3].audio)
    videos, audios, key = shuffle_for_matching(corpus, seed=0)
    assert all(c.audio is None for c in videos.clips) and all(c.video is None for c in audios.clips)
    by_id = {c.id: c for c in audios.clips}
    src = {id(c.audio): c for c in corpus.clips}
    for v_id, a_id in key:  # the key names the audio that came with the video
        video = next(c for c in videos.clips if c.id == v_id).video
        assert src[id(by_id[a_id].audio)].video is video
    write_key(key, tmp_path / "key.csv")
    assert (tmp_path / "key.csv").read_text().splitlines()[0] == "video,audio"


def test_a_corpus_is_a_plain_dataclass():
    c = Corpus([Clip("x", np.zeros((2, 3), np.float32), np.zeros((2, 1), np.float32))])
    train, val = c.split(0.5)
    assert len(train.clips) + len(val.clips) == 1


def test_source_identity_rows_and_removal_lines(tmp_path):
    from avmatch.corpus import retire_clips, reuse_clip

    root = tmp_path / "c"
    rates = {"video": 25.0, "audio": 25.0}
    ident = {"size": 10, "mtime_ns": 5, "hash": "ab"}
    append_clip(root, "a", {"video": np.ones((4, 3)), "audio": np.ones((4, 2))}, rates_hz=rates,
                source="/m/a.mp4", source_id=ident)
    append_clip(root, "b", {"audio": np.zeros((5, 2))}, rates_hz=rates, source="/m/b.wav")
    rows = {r["modality"]: r for r in read_manifest(root) if r["clip"] == "a"}
    assert rows["video"]["source_id"] == ident and "source_id" not in read_manifest(root)[-1]
    reuse_clip(root, rows, "a2", "/n/a2.mp4", ident)  # a moved copy: its own arrays, same values
    retire_clips(root, {"a": "its file moved to /n/a2.mp4"})
    corpus = load_corpus(root)
    assert [c.id for c in corpus.clips] == ["b", "a2"] and corpus.clips[1].source == "/n/a2.mp4"
    np.testing.assert_array_equal(corpus.clips[1].video, np.ones((4, 3)))
    assert {r["file"] for r in read_manifest(root)}.isdisjoint({r["file"] for r in rows.values()})
    assert set(done_entries(root)) == {"/m/b.wav", "/n/a2.mp4"}
    manifest = root / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    for bad, fragment in (({**json.loads(lines[0]), "source_id": {"size": "10"}}, "source_id"),
                          ({"clip": ["a"], "removed": "x"}, "removal")):
        manifest.write_text("\n".join(lines + [json.dumps(bad)]) + "\n")
        one_line(lambda: load_corpus(root), "manifest.jsonl", f"line {len(lines) + 1}", fragment)


def test_write_corpus_rows_name_their_modalities(tmp_path):
    corpus = make_feature_corpus(3, video_dim=4, audio_dim=2, min_len=3, max_len=4, seed=0)
    corpus.clips[0].audio = None
    write_corpus(corpus, tmp_path / "c")
    assert {r["clip"]: r["modalities"] for r in read_manifest(tmp_path / "c")}[corpus.clips[0].id] == ["video"]
    again = load_corpus(tmp_path / "c")
    assert [(c.video is None, c.audio is None) for c in again.clips] == [(False, True), (False, False), (False, False)]


def test_a_sparse_npy_that_claims_a_huge_array_is_refused_from_its_header(tmp_path):
    """vfeat.npy's header claims 32768 x 16384 float64 (4 GiB) in a sparse file of a few blocks: refused
    before any data is read, both for its width and for a row count afeat does not share."""
    import tracemalloc

    from numpy.lib import format as npformat

    from avmatch.corpus import load_corpus
    from avmatch.errors import AvmatchError

    def sparse_npy(path, shape):
        with open(path, "wb") as f:
            npformat.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
            f.truncate(f.tell() + 8 * shape[0] * shape[1])  # a hole, not data

    for shape, says in (((32768, 16384), "dims per row"), ((32768, 1024), "vfeat has 32768 rows but afeat has 5")):
        clip = tmp_path / f"c{shape[1]}" / "clip1"
        clip.mkdir(parents=True)
        sparse_npy(clip / "vfeat.npy", shape)
        np.save(clip / "afeat.npy", np.zeros((5, 128), np.float32))
        tracemalloc.start()
        with pytest.raises(AvmatchError, match=says):
            load_corpus(clip.parent)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 50 << 20


def test_course_shaped_features_are_uint8_codes_of_120_rows_that_read_back_as_generated(tmp_path):
    """make-features' default: YouTube-8M's codes on disk (a quarter of float32's bytes), read back to
    exactly the values generated; ``content`` weighs what a clip is throughout (seen by both modalities)."""
    from avmatch.corpus import dequantize, quantize
    from avmatch.testing.featuregen import make_course_corpus, write_feature_task

    x = np.linspace(-3, 3, 1001)
    assert np.abs(dequantize(quantize(x)) - np.clip(x, -1.992, 2.008)).max() <= 2 / 255 + 1e-6
    written = write_feature_task(tmp_path / "f", 6, test=4, video_dim=32, audio_dim=8, seed=3)
    made = make_course_corpus(6, video_dim=32, audio_dim=8, seed=3)
    back = load_corpus(written["train"])
    assert all(np.load(p).dtype == np.uint8 for p in (tmp_path / "f" / "arrays").glob("*.npy"))
    for a, b in zip(made.clips, back.clips, strict=True):
        assert a.video.shape == (120, 32) and np.array_equal(a.video, b.video) and np.array_equal(a.audio, b.audio)
    assert len(load_corpus(written["videos"]).clips) == 4 and written["key"].read_text().count("\n") == 5

    def constant_share(corpus) -> float:  # of each column's variance, the share constant within a clip
        v = np.stack([c.video for c in corpus.clips])
        return 1 - v.var(axis=1).mean() / v.var(axis=(0, 1)).mean()

    with_content = constant_share(make_course_corpus(30, video_dim=32, audio_dim=8, seed=1))
    without = constant_share(make_course_corpus(30, video_dim=32, audio_dim=8, seed=1, content=0.0))
    assert with_content > without + 0.1


def test_a_split_depends_on_the_seed_and_the_clip_ids_not_the_order_they_were_read_in():
    """Parallel extraction writes clips in the order its workers finish: the same corpus read in another
    order must split the same (the demo's validation clips changed between two runs of one seed)."""
    corpus = make_feature_corpus(30, video_dim=4, audio_dim=2, min_len=3, max_len=4, seed=0)
    shuffled = corpus._with([corpus.clips[i] for i in np.random.default_rng(1).permutation(30)])
    for a, b in zip(corpus.split(0.3, seed=5), shuffled.split(0.3, seed=5), strict=True):
        assert [c.id for c in a.clips] == [c.id for c in b.clips] == sorted(c.id for c in a.clips)
    assert [c.id for c in corpus.split(0.3, seed=6)[1].clips] != [c.id for c in corpus.split(0.3, seed=5)[1].clips]
