"""The FAISS embedding index: exact search equals brute force, approximate kinds report their
recall, indexes survive a save/load round trip, and ``avmatch index`` / ``avmatch search`` work."""

import json

import faiss
import numpy as np
import pytest

from avmatch.checkpoint import load_trained
from avmatch.cli import main
from avmatch.corpus import write_corpus
from avmatch.errors import AvmatchError
from avmatch.inference import clip_embeddings
from avmatch.matching.index import (
    build_index,
    index_corpus,
    index_embeddings,
    load_index,
    measure_recall,
    search,
    vectors,
)
from avmatch.testing.featuregen import make_feature_corpus
from avmatch.training import TrainConfig, train


def unit(rows, dim, seed):
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries, base, k):
    sims = queries @ base.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), order


def test_flat_search_equals_brute_force():
    base, queries = unit(500, 24, 0), unit(40, 24, 1)
    sims, ids = search(build_index(base, "flat"), queries, 7)
    want_sims, want_ids = brute_force(queries, base, 7)
    assert np.allclose(sims, want_sims, atol=1e-5)
    assert (ids == want_ids).mean() > 0.99  # only float ties may swap
    assert np.allclose(np.take_along_axis(queries @ base.T, ids, 1), want_sims, atol=1e-5)
    sims, ids = search(build_index(base[:3], "flat"), queries, 7)  # k beyond the rows held
    assert ids.shape == (40, 3)


def test_approximate_kinds_report_recall():
    base = unit(4000, 32, 2)
    queries = base[:300] + 0.05 * unit(300, 32, 3)  # near-duplicates: easy for any index
    for kind in ("ivf", "hnsw"):
        index = build_index(base, kind)
        recall = measure_recall(index, base, queries, k=10)
        assert set(recall) == {"queries", "recall@1", "recall@10"}
        assert 0.0 <= recall["recall@10"] <= 1.0 and recall["recall@1"] >= 0.9, (kind, recall)
    # an IVF index that probes every cell is exact; probing one cell of many is not, on random data
    assert measure_recall(build_index(base, "ivf", nlist=16, nprobe=16), base, unit(200, 32, 4))["recall@10"] == 1.0
    assert measure_recall(build_index(base, "ivf", nlist=64, nprobe=1), base, unit(200, 32, 4))["recall@10"] < 0.9
    with pytest.raises(AvmatchError, match="unknown index kind"):
        build_index(base, "lsh")


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(tmp_path, kind):
    video, audio = unit(300, 16, 5), unit(250, 16, 6)
    vids, aids = [f"v{i}" for i in range(300)], [f"a{j}" for j in range(250)]
    index = index_embeddings(vids, video, aids, audio, kind, scale=20.0, bias=-3.0, model="run", nprobe=4)
    assert (index.recall != {}) == (kind != "flat")
    index.save(tmp_path / "idx")
    back = load_index(tmp_path / "idx")
    assert (back.video_ids, back.audio_ids, back.kind, back.scale, back.bias, back.model) == \
        (vids, aids, kind, 20.0, -3.0, "run")
    assert back.recall == json.loads(json.dumps(index.recall))
    assert np.allclose(vectors(back.video, np.arange(300)), video, atol=1e-6)
    queries = ["v0", "v7", "v299"]
    assert back.search(queries, 5) == index.search(queries, 5)
    assert back.search(["a3"], 4, audio=True) == index.search(["a3"], 4, audio=True)


def test_search_by_id_both_ways_with_model_scores():
    video, audio = unit(200, 16, 7), unit(150, 16, 8)
    index = index_embeddings([f"v{i}" for i in range(200)], video, [f"a{j}" for j in range(150)], audio,
                             scale=10.0, bias=-1.0)
    hits = index.search(["v5"], 3)[0]
    want_sims, want_ids = brute_force(video[5:6], audio, 3)
    assert [c for c, _ in hits] == [f"a{j}" for j in want_ids[0]]
    assert np.allclose([s for _, s in hits], 10.0 * want_sims[0] - 1.0, atol=1e-4)
    back = index.search(["a9"], 3, audio=True)[0]
    _, want_ids = brute_force(audio[9:10], video, 3)
    assert [c for c, _ in back] == [f"v{i}" for i in want_ids[0]]
    with pytest.raises(AvmatchError, match="no video clip 'a9'"):
        index.search(["a9"], 3)


def test_load_rejects_what_is_not_an_index(tmp_path):
    with pytest.raises(AvmatchError, match="no index.json"):
        load_index(tmp_path)
    (tmp_path / "index.json").write_text('{"format": "something-else"}')
    with pytest.raises(AvmatchError, match="not an avmatch index"):
        load_index(tmp_path)
    index_embeddings(["v0", "v1"], unit(2, 4, 0), ["a0"], unit(1, 4, 1)).save(tmp_path / "ok")
    (tmp_path / "ok" / "audio.faiss").write_bytes(b"garbage")
    with pytest.raises(AvmatchError, match="audio.faiss: not a FAISS index"):
        load_index(tmp_path / "ok")


@pytest.fixture(scope="module")
def dual_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    corpus = make_feature_corpus(100, video_dim=32, audio_dim=16, min_len=6, max_len=10, seed=1)
    write_corpus(corpus, root / "feats")
    train(corpus, root / "run", TrainConfig(model="dual", epochs=3, batch_size=32, seed=0, histograms=False,
                                            model_options={"hidden": 128, "embed_dim": 64}), progress=False)
    return root, corpus


def test_cli_index_and_search_end_to_end(dual_run, capsys):
    root, corpus = dual_run
    assert main(["index", str(root / "feats"), "--model", str(root / "run"), "-o", str(root / "idx")]) == 0
    assert "indexed 100 videos and 100 audios (flat" in capsys.readouterr().out
    # the CLI's index is the library's
    trained = load_trained(root / "run")
    lib = index_corpus(trained, corpus)
    ids = [c.id for c in corpus.clips[:5]]
    assert main(["search", str(root / "idx"), *ids, "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "video,rank,audio,score" and len(lines) == 1 + 5 * 3
    got = [line.split(",") for line in lines[1:]]
    want = lib.search(ids, 3)
    assert [(g[0], g[2]) for g in got] == [(q, c) for q, hits in zip(ids, want, strict=True) for c, _ in hits]
    assert np.allclose([float(g[3]) for g in got], [s for hits in want for _, s in hits], atol=1e-3)
    # a trained model finds most clips' own audio among the top 3
    assert np.mean([any(c == q for c, _ in hits) for q, hits in zip([c.id for c in corpus.clips],
                                                                      lib.search([c.id for c in corpus.clips], 3),
                                                                      strict=True)]) > 0.25  # chance: 0.03
    assert main(["search", str(root / "idx"), ids[0], "--audio", "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == [ids[0]] and len(out[ids[0]]) == 2 and set(out[ids[0]][0]) == {"video", "score"}
    assert main(["search", str(root / "idx"), "nope"]) == 2
    assert "no video clip 'nope'" in capsys.readouterr().err
    # --like: the query's own modality, itself left out, by the cosine of the embeddings
    assert main(["search", str(root / "idx"), ids[0], "--like", "-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "video,rank,similar_video,similarity" and len(lines) == 5
    found = [line.split(",") for line in lines[1:]]
    assert ids[0] not in [f[2] for f in found]
    v = clip_embeddings(trained, [c.video for c in corpus.clips], "video")
    cos = v @ v[0]
    cos[0] = -np.inf
    assert [f[2] for f in found] == [corpus.clips[j].id for j in np.argsort(-cos)[:4]]
    assert np.allclose([float(f[3]) for f in found], np.sort(cos)[::-1][:4], atol=1e-4)
    assert main(["search", str(root / "idx"), ids[1], "--like", "--audio", "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out[ids[1]][0]) == {"similar_audio", "similarity"} and out[ids[1]][0]["similar_audio"] != ids[1]


def test_cli_index_hnsw_reports_recall(dual_run, capsys):
    root, _ = dual_run
    assert main(["index", str(root / "feats"), "--model", str(root / "run"), "-o", str(root / "hnsw"),
                 "--kind", "hnsw"]) == 0
    out = capsys.readouterr().out
    assert "(hnsw" in out and "recall video->audio" in out and "recall audio->video" in out
    assert load_index(root / "hnsw").recall["video->audio"]["recall@10"] > 0.9


def test_the_search_depth_is_tuned_for_a_recall_target_not_a_share_of_the_cells():
    from avmatch.matching.index import build_index, search, tune_search

    rng = np.random.default_rng(4)
    audio = rng.standard_normal((4000, 16)).astype(np.float32)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    video = audio + 0.1 * rng.standard_normal(audio.shape).astype(np.float32)
    index = build_index(audio, "ivf", nlist=64)
    got = tune_search(index, video, k=10, target=0.95)
    assert got["best_in_top10"] >= 0.95 and index.nprobe == got["nprobe"] < 64
    _, exact = search(build_index(audio, "flat"), video, 1)
    _, found = search(index, video, 10)
    assert (found == exact).any(axis=1).mean() >= 0.9  # holds beyond the sample it was tuned on
    if got["nprobe"] > 1:  # and one step shallower would not have reached the target on that sample
        index.nprobe = got["nprobe"] // 2
        _, shallow = search(index, video, 10)
        assert (shallow == exact).any(axis=1).mean() < 0.97
    assert tune_search(build_index(audio, "flat"), video) == {}


def test_a_target_the_codes_cannot_reach_does_not_make_the_search_scan_every_cell():
    """Coarse codes miss some exact bests at any depth: the depth is tuned for what searching every
    cell reaches, not escalated to every cell chasing a target no depth reaches."""
    from avmatch.matching.index import build_index, search, tune_search

    rng = np.random.default_rng(0)
    n, dim = 4000, 36
    audio = (rng.standard_normal((n, dim)) * np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    video = audio + 0.6 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    pq = build_index(audio, "ivfpq", pq_bytes=2)  # 2 bytes a vector: far from exact
    ivf = faiss.extract_index_ivf(pq)
    nlist = ivf.nlist
    tuned = tune_search(pq, video, 1, 0.999, full=audio)
    ivf.nprobe = nlist
    every = (search(pq, video, 1, full=audio)[1][:, 0] == (video @ audio.T).argmax(axis=1)).mean()
    assert every < 0.9 and tuned["nprobe"] < nlist  # the target is out of reach; the search stays shallow
    assert tuned["best_in_top1"] >= every - 0.05  # and finds about what every cell would


def test_the_depth_for_a_target_out_of_reach_is_the_shallowest_that_finds_its_share_of_the_ceiling():
    """Recall creeping up a query at a time towards a ceiling below the target: the depth that finds
    0.98 of what the deepest finds, not the one that finds all of it."""
    from avmatch.matching.index import shallowest_depth

    creeping = {1: 0.5, 2: 0.8, 4: 0.9, 8: 0.955, 16: 0.962, 32: 0.966, 64: 0.968, 128: 0.969, 2828: 0.969}
    assert shallowest_depth(creeping, 0.98) == 8  # 0.98 x 0.969 = 0.950
    assert shallowest_depth(creeping, 0.95) == 8  # reachable: the first depth that reaches it
    assert shallowest_depth(creeping, 0.9) == 4
    assert shallowest_depth({1: 0.2, 2: 0.99}, 0.98) == 2

def test_a_shard_tunes_its_depth_on_the_queries_whose_kept_rows_it_holds():
    """One shard of two: a query whose best row lies in the other shard needs nothing from this one,
    and finding this shard's best for it (a far row, in no particular cell) is no recall at all."""
    from avmatch.matching.index import build_index, tune_search

    rng = np.random.default_rng(4)
    audio = rng.standard_normal((4000, 16)).astype(np.float32)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    video = audio + 0.1 * rng.standard_normal(audio.shape).astype(np.float32)
    sample = video[::8]  # 500 queries, half with their partner in the first shard (audio[:2000])
    floor = (sample @ audio.T).max(axis=1)  # each query's best score over both shards
    shard = build_index(audio[:2000], "ivf", nlist=48)
    got = tune_search(shard, sample, k=10, target=0.95, floor=floor)
    held = (sample @ audio[:2000].T).max(axis=1) >= floor
    assert got["queries"] == held.sum() and 200 < got["queries"] < 300
    assert got["best_in_top10"] >= 0.95 and shard.nprobe == got["nprobe"]
    every = tune_search(build_index(audio[:2000], "ivf", nlist=48), sample, k=10, target=0.95, sample=500)
    assert every["queries"] == 500 and every["nprobe"] >= got["nprobe"]


def test_ivfpq_keeps_codes_and_reranks_with_the_full_vectors(tmp_path):
    """A compressed index: far fewer bytes a vector than float32, recall back near exact once its
    candidates are re-ranked with the full vectors, which a saved index keeps on disk (memory-mapped)
    and checks like its other files."""
    from avmatch.matching.index import PQ_MIN, index_bytes, index_params, is_compressed, tune_search

    n, dim = 4000, 36  # 36 dims pad to 48 for 16 sub-quantisers of 3
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((n, dim)) * np.arange(1, dim + 1) ** -0.5).astype(np.float32)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    video = audio[:400] + 0.3 * unit(400, dim, 1) / np.sqrt(dim)
    pq = build_index(audio, "ivfpq", pq_bytes=8)
    assert is_compressed(pq) and not is_compressed(build_index(audio, "ivf"))
    assert index_params(pq)["kind"] == "ivfpq" and index_params(pq)["pq_bytes"] == 8
    assert index_bytes(pq) / n < 25 < dim * 4  # 8 bytes of code + 8 of id, the cells and code books
    tuned = tune_search(pq, video, 10, full=audio)
    exact = brute_force(video, audio, 10)[1]
    coded = search(pq, video, 10)[1]  # by the codes alone
    refined = search(pq, video, 10, full=audio)[1]
    first = lambda found: (found[:, 0] == exact[:, 0]).mean()  # noqa: E731  (recall@1)
    assert first(refined) > first(coded) and first(refined) >= 0.9, (first(refined), first(coded))
    assert tuned["best_in_top10"] >= 0.95 and (refined == exact[:, :1]).any(axis=1).mean() >= 0.9
    sims, rows = search(pq, video[:5], 3, full=audio)
    assert np.allclose(sims, np.take_along_axis(video[:5] @ audio.T, rows, 1), atol=1e-5)  # exact scores, best first
    assert (np.diff(sims, axis=1) <= 0).all()

    ids = [f"c{i}" for i in range(n)]
    index = index_embeddings(ids, audio, ids, audio, "ivfpq", pq_bytes=8)
    index.save(tmp_path / "pq")
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == \
        ["audio.faiss", "audio.npy", "index.json", "video.faiss", "video.npy"]
    back = load_index(tmp_path / "pq")
    assert back.kind == "ivfpq" and isinstance(back.audio_full, np.memmap)
    assert back.search(["c0", "c5"], 5) == index.search(["c0", "c5"], 5)
    assert back.search(["c0"], 1)[0][0][0] == "c0"  # its own audio (the same vector) comes first
    full = np.load(tmp_path / "pq" / "audio.npy")
    full[0, 0] += 1.0
    np.save(tmp_path / "pq" / "audio.npy", full)  # vectors from elsewhere beside the codes
    with pytest.raises(AvmatchError, match="audio.npy: is not the file index.json recorded"):
        load_index(tmp_path / "pq")
    with pytest.raises(AvmatchError, match="needs at least"):
        build_index(audio[: PQ_MIN - 1], "ivfpq", nlist=4)


def test_an_unknown_index_kind_is_refused_before_any_work(tmp_path, capsys):
    """--retrieval/--kind are checked as the command line is read: no model is loaded, nothing extracted."""
    for argv in (["match", "v", "a", "--model", str(tmp_path / "missing"), "--retrieval", "lsh"],
                 ["index", "feats", "--model", str(tmp_path / "missing"), "-o", str(tmp_path / "i"), "--kind", "lsh"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "unknown index kind 'lsh'; use auto or one of: flat, ivf, ivfpq, hnsw" in err and "missing" not in err
