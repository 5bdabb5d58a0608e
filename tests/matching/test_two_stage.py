"""Two-stage matching: candidates, sparse normalisation, sparse assignment, and its agreement with
the dense exact matching on planted data."""

import csv
import dataclasses

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix, issparse

from avmatch.checkpoint import Trained
from avmatch.corpus import Clip, Corpus
from avmatch.errors import AvmatchError
from avmatch.features.record import ExtractorRecord
from avmatch.matching import MatchOptions, MatchResult, assign, margins, match_corpora, normalise
from avmatch.matching.two_stage import (
    assign_sparse,
    candidate_matrix,
    greedy_one_to_one,
    margins_sparse,
    match_embeddings,
    normalise_sparse,
    outside_log_mass,
    top_k_candidates,
)
from avmatch.metrics import candidate_retrieval_metrics, evaluate_pairs, retrieval_metrics
from avmatch.models import build_model, list_models, register_model
from avmatch.models.base import EmbeddingModel, PairModel, masked_mean


def planted(n, dim=64, noise=2.0, seed=0, n_audio=None):
    """Unit video embeddings and audio_i = normalise(video_i + noise); extra audios are distractors."""
    rng = np.random.default_rng(seed)
    video = rng.standard_normal((n, dim)).astype(np.float32)
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    audio = video + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    extra = (n_audio or n) - n
    if extra > 0:
        audio = np.concatenate([audio, rng.standard_normal((extra, dim)).astype(np.float32)])
    audio = audio[: n_audio or n]
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    return video, audio.astype(np.float32)


def check_one_to_one(chosen, n_audio):
    matched = chosen[chosen >= 0]
    assert len(set(matched.tolist())) == len(matched), "an audio was given twice"
    assert matched.max(initial=-1) < n_audio


# --- the planted matching: two-stage against dense exact ---------------------------------------

@pytest.mark.parametrize("normalisation", ["dual-softmax", "none"])
def test_two_stage_agrees_with_dense_on_planted_data(normalisation):
    n, scale = 2000, 10.0
    video, audio = planted(n, noise=1.7)
    dense = assign(normalise(scale * (video @ audio.T).astype(np.float64), normalisation))
    dense_acc = (dense == np.arange(n)).mean()
    assert 0.85 < dense_acc < 1.0  # a task with something to get wrong
    scores, raw, chosen = match_embeddings(video, audio, k=10, scale=scale, normalisation=normalisation)
    check_one_to_one(chosen, n)
    assert (chosen >= 0).all()  # the leftovers were matched among themselves
    acc = (chosen == np.arange(n)).mean()
    assert acc >= 0.99 * dense_acc, (acc, dense_acc)
    assert (chosen == dense).mean() >= 0.93
    assert raw.nnz <= n * 10 + n  # candidates plus at most one filled pair a video
    # random candidates would not do: the test can fail
    _, _, bad = match_embeddings(video, audio[np.random.default_rng(1).permutation(n)], k=10, scale=scale)
    assert (bad == np.arange(n)).mean() < 0.05


def test_candidates_are_the_exact_top_k():
    video, audio = planted(300, dim=16)
    sims, idx = top_k_candidates(video, audio, 7)
    full = video @ audio.T
    assert np.allclose(sims, -np.sort(-full, axis=1)[:, :7], atol=1e-5)
    assert np.allclose(np.take_along_axis(full, idx, 1), sims, atol=1e-5)
    sims, idx = top_k_candidates(video, audio[:4], 7)  # fewer audios than K
    assert idx.shape == (300, 4) and (idx >= 0).all()


def test_sparse_dual_softmax_equals_dense_when_the_outside_mass_is_exact():
    n, scale, bias = 400, 8.0, -2.0
    video, audio = planted(n, dim=32, noise=2.5)
    dense = normalise(scale * (video @ audio.T).astype(np.float64) + bias)
    _, idx = top_k_candidates(video, audio, 6)
    rows = np.repeat(np.arange(n), 6)
    raw = candidate_matrix(rows, idx.ravel(), scale * (video[rows] * audio[idx.ravel()]).sum(1) + bias, (n, n))
    rest = outside_log_mass(video, audio, idx, scale, bias, sample=n)  # the sample is everything: exact
    got = normalise_sparse(raw, "dual-softmax", *rest)
    assert np.allclose(got.toarray()[rows, idx.ravel()], dense[rows, idx.ravel()], atol=1e-4)
    # over the candidates alone the values differ (the column sums miss the rest) ...
    alone = normalise_sparse(raw, "dual-softmax")
    assert not np.allclose(alone.toarray()[rows, idx.ravel()], dense[rows, idx.ravel()], atol=1e-2)
    # ... and a sampled estimate is close to the exact one
    est = normalise_sparse(raw, "dual-softmax", *outside_log_mass(video, audio, idx, scale, bias, sample=100))
    assert np.abs(est.toarray()[rows, idx.ravel()] - dense[rows, idx.ravel()]).mean() < 0.2
    assert normalise_sparse(raw, "none") is raw
    with pytest.raises(AvmatchError, match="unknown score normalisation"):
        normalise_sparse(raw, "magic")


def test_hub_audio_is_discounted_by_the_sparse_dual_softmax():
    # audio 0 is every video's best candidate; dual softmax must prefer a video's own audio
    raw = csr_matrix(np.array([[5.0, 4.0, 0, 0], [5.0, 0, 4.0, 0], [5.0, 0, 0, 4.0]]))
    greedy_raw = assign_sparse(raw, "greedy")
    greedy_norm = assign_sparse(normalise_sparse(raw), "greedy")
    assert greedy_raw.tolist() == [0, 0, 0]
    assert greedy_norm.tolist() == [1, 2, 3]


# --- the sparse assignment ----------------------------------------------------------------------

def test_sparse_hungarian_beats_greedy_like_the_dense_one():
    scores = np.array([[0.9, 0.8, 0.0], [0.95, 0.1, 0.0], [0.0, 0.2, 0.7]])
    sparse = csr_matrix(scores)  # the zeros are no candidates
    assert assign_sparse(sparse, "greedy").tolist() == [0, 0, 2]
    assert assign_sparse(sparse, "hungarian").tolist() == assign(scores).tolist() == [1, 0, 2]
    with pytest.raises(AvmatchError, match="unknown assignment"):
        assign_sparse(sparse, "magic")


def brute_force_sparse_optimum(scores: csr_matrix) -> float:
    """The objective assign_sparse maximises, by dense linear_sum_assignment: candidate edges, plus
    one 'unmatched' edge per video worth just under its weakest candidate, nothing else."""
    nv, na = scores.shape
    weight = scores.data - scores.data.min() + 1.0
    w = csr_matrix((weight, scores.indices, scores.indptr), shape=scores.shape).toarray()
    edges = csr_matrix((np.ones_like(weight), scores.indices, scores.indptr), shape=scores.shape).toarray() > 0
    big = np.full((nv, na + nv), -1e6)
    big[:, :na][edges] = w[edges]
    weakest = np.where(edges.any(1), np.where(edges, w, np.inf).min(1), 1.0)
    big[np.arange(nv), na + np.arange(nv)] = weakest - 1e-9 * (weight.max() + 1.0)
    r, c = linear_sum_assignment(big, maximize=True)
    return big[r, c].sum(), weakest


@pytest.mark.parametrize("shape", [(12, 12), (15, 9), (8, 14)])
def test_sparse_assignment_is_optimal_and_one_to_one(shape):
    rng = np.random.default_rng(sum(shape))
    nv, na = shape
    for trial in range(20):
        dense = rng.normal(size=shape)
        keep = rng.random(shape) < 0.3
        keep[np.arange(nv), rng.integers(0, na, nv)] = True
        if trial % 4 == 0:
            keep[0] = False  # a video without candidates
        scores = csr_matrix(np.where(keep, dense, 0.0))
        scores.data = dense[keep]  # zero-valued candidates stay candidates
        chosen = assign_sparse(scores)
        check_one_to_one(chosen, na)
        assert all(keep[i, j] for i, j in enumerate(chosen) if j >= 0)
        if trial % 4 == 0:
            assert chosen[0] == -1
        best, weakest = brute_force_sparse_optimum(scores)
        weight = scores.data - scores.data.min() + 1.0
        w = csr_matrix((weight, scores.indices, scores.indptr), shape=shape).toarray()
        got = sum(w[i, j] if j >= 0 else weakest[i] - 1e-9 * (weight.max() + 1.0) for i, j in enumerate(chosen))
        assert got == pytest.approx(best, abs=1e-6)


def test_more_videos_than_audios_reports_the_unmatched():
    video, audio = planted(300, dim=32, noise=1.0)
    audio = audio[:200]  # the last 100 videos have no audio
    _, _, chosen = match_embeddings(video, audio, k=5, scale=10.0)
    check_one_to_one(chosen, 200)
    assert (chosen >= 0).sum() == 200 and (chosen < 0).sum() == 100
    assert (chosen[:200] == np.arange(200)).mean() > 0.95
    scores, raw, chosen = match_embeddings(video, audio, k=5, scale=10.0)
    result = MatchResult([f"v{i}" for i in range(300)], [f"a{j}" for j in range(200)], scores, chosen, "hungarian", raw)
    assert result.unmatched_audios() == []
    rows = result.rows()
    assert sum(r["audio"] == "" for r in rows) == 100


def test_more_audios_than_videos_leaves_audios_unused():
    video, audio = planted(150, dim=32, noise=1.0, n_audio=400)
    scores, raw, chosen = match_embeddings(video, audio, k=5, scale=10.0)
    check_one_to_one(chosen, 400)
    assert (chosen >= 0).all() and (chosen == np.arange(150)).mean() > 0.95
    result = MatchResult([f"v{i}" for i in range(150)], [f"a{j}" for j in range(400)], scores, chosen, "hungarian", raw)
    assert len(result.unmatched_audios()) == 250


def test_greedy_one_to_one_fallback_is_valid():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(50, 40))
    keep = rng.random((50, 40)) < 0.1
    scores = csr_matrix(np.where(keep, dense, 0.0))
    chosen = greedy_one_to_one(scores)
    check_one_to_one(chosen, 40)
    assert all(keep[i, j] for i, j in enumerate(chosen) if j >= 0)
    # maximal: no free video has a free candidate left
    free_audio = np.ones(40, bool)
    free_audio[chosen[chosen >= 0]] = False
    for i in np.flatnonzero(chosen < 0):
        assert not (keep[i] & free_audio).any()
    # the best pair overall is always taken
    i, j = np.unravel_index(np.where(keep, dense, -np.inf).argmax(), dense.shape)
    assert chosen[i] == j


def test_sparse_margins_match_dense_margins_when_all_pairs_are_candidates():
    rng = np.random.default_rng(2)
    dense = rng.normal(size=(6, 5))
    chosen = assign(dense)
    assert np.allclose(margins_sparse(csr_matrix(dense), chosen), margins(dense, chosen), equal_nan=True)


# --- outputs and metrics ------------------------------------------------------------------------

def test_candidate_metrics_equal_dense_metrics_when_all_pairs_are_candidates():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(30, 30))
    truth = rng.permutation(30)
    dense = retrieval_metrics(scores, truth)
    sparse = candidate_retrieval_metrics(csr_matrix(scores), truth)
    for k in ("top1", "top5", "mrr"):
        assert sparse[k] == pytest.approx(dense[k])
    assert sparse["in_candidates"] == 1.0
    # keep only each row's 3 best: truths outside them miss
    top3 = np.argsort(-scores, 1)[:, :3]
    rows = np.repeat(np.arange(30), 3)
    cand = candidate_matrix(rows, top3.ravel(), scores[rows, top3.ravel()], (30, 30))
    got = candidate_retrieval_metrics(cand, truth)
    inside = (top3 == truth[:, None]).any(1)
    assert got["in_candidates"] == pytest.approx(inside.mean())
    assert got["top1"] == pytest.approx(dense["top1"])
    assert got["top5"] == pytest.approx(inside.mean())  # top-5 beyond 3 candidates: only those inside
    assert got["mrr"] <= dense["mrr"]


def test_sparse_result_writes_candidates_and_evaluates(tmp_path):
    n = 500
    video, audio = planted(n, dim=32, noise=1.2)
    scores, raw, chosen = match_embeddings(video, audio, k=5, scale=10.0)
    result = MatchResult([f"v{i}" for i in range(n)], [f"a{j}" for j in range(n)], scores, chosen, "hungarian", raw)
    written = result.write(tmp_path / "pairs.csv")
    assert [p.name for p in written] == ["pairs.csv", "pairs.scores.npz"]  # no heat map for sparse scores
    with open(tmp_path / "pairs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n and all(np.isfinite(float(r["score"])) for r in rows)
    key = tmp_path / "key.csv"
    key.write_text("video,audio\n" + "".join(f"v{i},a{i}\n" for i in range(n)))
    metrics = evaluate_pairs(tmp_path / "pairs.csv", key)
    assert metrics["one_to_one"] == pytest.approx((chosen == np.arange(n)).mean())
    assert 0.5 < metrics["top1"] <= metrics["top5"] <= metrics["in_candidates"] <= 1.0
    assert "a2v_top1" not in metrics
    # the dense writer is untouched
    dense = MatchResult(["v0", "v1"], ["a0", "a1"], np.eye(2), np.array([0, 1]), "hungarian")
    assert len(dense.write(tmp_path / "dense.csv", heatmap=False)) == 2
    (tmp_path / "key2.csv").write_text("video,audio\nv0,a0\nv1,a1\n")
    assert evaluate_pairs(tmp_path / "dense.csv", tmp_path / "key2.csv")["top1"] == 1.0


# --- match_corpora: dense vs two-stage with models ----------------------------------------------

class MeanEmbed(EmbeddingModel):
    """Test model: the normalised mean row is the clip embedding (both modalities share a space)."""

    loss = "infonce"

    def __init__(self, video_dim, audio_dim):
        super().__init__(init_scale=10.0, init_bias=0.0)

    def encode_video(self, x, lengths):
        return torch.nn.functional.normalize(masked_mean(x, lengths), dim=-1)

    encode_audio = encode_video


class MeanPair(PairModel):
    """Test pair model: keeps sequences, scores a pair by the cosine of the mean rows."""

    def __init__(self, video_dim, audio_dim):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # gives the model a device

    def encode_video(self, x, lengths):
        return x

    encode_audio = encode_video

    def score_pairs(self, v, a, v_len, a_len):
        mv = torch.nn.functional.normalize(masked_mean(v, v_len), dim=-1)
        ma = torch.nn.functional.normalize(masked_mean(a, a_len), dim=-1)
        return 10.0 * (mv * ma).sum(-1)


if "test-mean-embed" not in {m.name for m in list_models()}:
    register_model("test-mean-embed", "test only", kind="embedding")(MeanEmbed)
    register_model("test-mean-pair", "test only", kind="pair")(MeanPair)


def trained_of(name, dim=16):
    zeros, ones = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    return Trained(build_model(name, dim, dim), zeros, ones, zeros, ones, extractor=ExtractorRecord(name="test"))


def planted_corpora(n, dim=16, noise=3.0, seed=0):
    rng = np.random.default_rng(seed)
    videos, audios = [], []
    for i in range(n):
        t = int(rng.integers(3, 8))
        v = rng.standard_normal((t, dim)).astype(np.float32) + rng.standard_normal(dim).astype(np.float32) * 2
        a = v + noise * rng.standard_normal((t, dim)).astype(np.float32)
        videos.append(Clip(f"v{i}", video=v))
        audios.append(Clip(f"a{i}", audio=a))
    test = {"name": "test"}  # the extractor trained_of's runs record: features must come from the same one
    return Corpus(videos, extractor=dict(test)), Corpus(audios, extractor=dict(test))


def test_mode_for():
    assert MatchOptions().mode_for(100, 100) == "dense"
    assert MatchOptions().mode_for(6000, 6000) == "two-stage"
    assert MatchOptions(mode="dense").mode_for(6000, 6000) == "dense"
    assert MatchOptions(mode="two-stage").mode_for(10, 10) == "two-stage"
    assert MatchOptions(dense_max=200).mode_for(300, 300) == "two-stage"
    with pytest.raises(AvmatchError, match="unknown matching mode"):
        MatchOptions(mode="fast")


def test_match_corpora_two_stage_agrees_with_dense():
    videos, audios = planted_corpora(600)
    trained = trained_of("test-mean-embed")
    dense = match_corpora(trained, videos, audios, MatchOptions(mode="dense"))
    two = match_corpora(trained, videos, audios, MatchOptions(mode="two-stage", candidates=8))
    above = MatchOptions(candidates=8, dense_max=100)  # auto, above the threshold: two-stage
    auto = match_corpora(trained, videos, audios, above)
    assert not issparse(dense.scores) and issparse(two.scores) and issparse(auto.scores)
    acc = {name: np.mean([r["video"][1:] == r["audio"][1:] for r in res.rows()])
           for name, res in (("dense", dense), ("two", two))}
    assert 0.6 < acc["dense"] < 1.0
    assert acc["two"] >= 0.99 * acc["dense"], acc
    assert (two.chosen == auto.chosen).all()
    assert (two.chosen == dense.chosen).mean() > 0.95


def test_pair_model_rescores_candidates_from_a_retriever():
    videos, audios = planted_corpora(300)
    pair, embed = trained_of("test-mean-pair"), trained_of("test-mean-embed")
    with pytest.raises(AvmatchError, match="retriever"):
        match_corpora(pair, videos, audios, MatchOptions(mode="two-stage"))
    two_stage = MatchOptions(mode="two-stage", candidates=8)
    rescored = match_corpora(pair, videos, audios, two_stage, retriever=embed)
    direct = match_corpora(embed, videos, audios, dataclasses.replace(two_stage, normalise="none"))
    # the pair model's score is the embedding model's: the same candidates, the same raw scores
    assert np.allclose(rescored.raw_scores.toarray(), direct.raw_scores.toarray(), atol=1e-4)
    dense = match_corpora(pair, videos, audios, MatchOptions(mode="dense"))
    assert (rescored.chosen == dense.chosen).mean() > 0.95


def test_cli_match_two_stage_end_to_end(tmp_path, capsys):
    from avmatch.cli import main
    from avmatch.corpus import write_corpus

    videos, audios = planted_corpora(400)
    extra = planted_corpora(30, seed=9)[1]  # audios no video asks for
    audios.clips += [Clip(f"x{c.id}", audio=c.audio) for c in extra.clips]
    for corpus in (videos, audios):
        corpus.extractor = {"name": "test"}
    write_corpus(videos, tmp_path / "videos")
    write_corpus(audios, tmp_path / "audios")
    trained_of("test-mean-embed").save(tmp_path / "run.pt")
    (tmp_path / "key.csv").write_text("video,audio\n" + "".join(f"v{i},a{i}\n" for i in range(400)))
    common = [str(tmp_path / "videos"), str(tmp_path / "audios"), "--model", str(tmp_path / "run.pt")]
    assert main(["match", *common, "-o", str(tmp_path / "two.csv"), "--mode", "two-stage", "--candidates", "8"]) == 0
    out = capsys.readouterr().out
    assert "two-stage" in out and "left unmatched: 0 videos" in out and "30 audios" in out
    assert not (tmp_path / "two.heatmap.png").exists()
    assert main(["match", *common, "-o", str(tmp_path / "dense.csv"), "--no-heatmap"]) == 0  # auto: dense
    assert "two-stage" not in capsys.readouterr().out
    two = evaluate_pairs(tmp_path / "two.csv", tmp_path / "key.csv")
    dense = evaluate_pairs(tmp_path / "dense.csv", tmp_path / "key.csv")
    assert two["one_to_one"] >= 0.99 * dense["one_to_one"] > 0.5
    assert two["top1"] == pytest.approx(dense["top1"], abs=0.02)
    assert main(["evaluate", str(tmp_path / "two.csv"), "--key", str(tmp_path / "key.csv")]) == 0


def test_timing_model_retrieves_by_mean_frame_and_rescores_with_offsets():
    videos, audios = planted_corpora(60, noise=0.5)
    sync = trained_of("sync")  # untrained: this checks the plumbing, not the accuracy
    sync.model.max_lag = 2
    dense = match_corpora(sync, videos, audios, MatchOptions(mode="dense"))
    every = MatchOptions(mode="two-stage", candidates=60)  # every audio a candidate
    two = match_corpora(sync, videos, audios, every)
    assert issparse(two.scores) and two.offset_s is not None and np.isfinite(two.offset_s).all()
    check_one_to_one(two.chosen, 60)
    rows = np.repeat(np.arange(60), 60)
    assert np.allclose(two.raw_scores.toarray()[rows, np.tile(np.arange(60), 60)], dense.raw_scores.ravel(), atol=1e-3)


def test_cli_match_format_json_writes_the_csv_rows_as_json_with_its_score_file(tmp_path, capsys, monkeypatch):
    """`avmatch match --format json`: pairs.json (by default) holds pairs.csv's rows (floats as computed,
    NaN as null) with the method and the audios left unmatched; its score file and heat map beside it
    belong to it, evaluate and mux read it as they read pairs.csv; `-o -` prints the same text."""
    import json

    from avmatch.cli import main
    from avmatch.corpus import write_corpus
    from avmatch.outputs import check_same_run, read_rows

    videos, audios = planted_corpora(40)
    audios.clips += [Clip(f"x{c.id}", audio=c.audio) for c in planted_corpora(3, seed=9)[1].clips]
    write_corpus(videos, tmp_path / "videos")
    write_corpus(audios, tmp_path / "audios")
    trained_of("test-mean-embed").save(tmp_path / "run.pt")
    (tmp_path / "key.csv").write_text("video,audio\n" + "".join(f"v{i},a{i}\n" for i in range(40)))
    common = [str(tmp_path / "videos"), str(tmp_path / "audios"), "--model", str(tmp_path / "run.pt"),
              "--min-confidence", "0.5"]  # some videos left unmatched: NaN cells
    monkeypatch.chdir(tmp_path)
    assert main(["match", *common, "--format", "json"]) == 0
    assert main(["match", *common, "-o", "table.csv"]) == 0  # (pairs.csv would share pairs.json's score file)
    capsys.readouterr()
    doc = json.loads((tmp_path / "pairs.json").read_text())
    assert doc["method"] == "hungarian" and doc["two_stage"] is False
    assert {"xa0", "xa1", "xa2"} <= set(doc["unmatched_audios"])
    as_csv = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert [r["video"] for r in doc["pairs"]] == [r["video"] for r in as_csv] and len(as_csv) == 40
    assert any(r["audio"] is None or r["confidence"] is None for r in doc["pairs"]) or \
        all(r["audio"] for r in as_csv)
    for got, want in zip(doc["pairs"], as_csv, strict=True):
        assert list(got) == list(want)
        assert {k: "" if v is None else v if isinstance(v, str) else f"{v:.6g}" for k, v in got.items()} == want
    assert read_rows(tmp_path / "pairs.json") == read_rows(tmp_path / "table.csv")
    assert (tmp_path / "pairs.heatmap.png").exists()
    assert check_same_run(tmp_path / "pairs.json", tmp_path / "pairs.scores.npz")["method"] == "hungarian"
    assert evaluate_pairs(tmp_path / "pairs.json", tmp_path / "key.csv") == \
        evaluate_pairs(tmp_path / "table.csv", tmp_path / "key.csv")
    assert main(["match", *common, "--format", "json", "-o", "-"]) == 0
    assert capsys.readouterr().out == (tmp_path / "pairs.json").read_text()
    assert main(["match", *common, "-o", "table.csv", "--json"]) == 0  # the same document printed, with the files
    printed = json.loads(capsys.readouterr().out)
    assert printed.pop("written") == ["table.csv", "table.scores.npz", "table.heatmap.png"] and printed == doc


def test_evaluate_on_arrays_equals_evaluate_on_the_written_files(tmp_path):
    """avmatch.evaluate(result, key) judges the result in memory, with no file written: it gives what
    evaluating its written set gives, for dense and two-stage matching and a timing model's offsets."""
    import avmatch

    videos, audios = planted_corpora(60)
    embed = trained_of("test-mean-embed")
    results = {"dense": match_corpora(embed, videos, audios, MatchOptions(mode="dense", min_confidence=0.3)),
               "two-stage": match_corpora(embed, videos, audios, MatchOptions(mode="two-stage", candidates=8)),
               "timing": match_corpora(embed, videos, audios, MatchOptions(mode="dense"))}
    timing = results["timing"]  # offsets as a timing model gives them, to more digits than pairs.csv keeps
    timing.offset_s = np.random.default_rng(0).normal(scale=0.05, size=60)
    timing.offset_conf = np.full(60, 0.5)
    assert (results["dense"].chosen < 0).any() and (timing.chosen == np.arange(60)).mean() > 0.5
    key = {f"v{i}": f"a{i}" for i in range(55)} | {"v55.mp4": "a56.wav"}  # file names, a wrong pair
    (tmp_path / "key.csv").write_text("video,audio,offset_s\n" + "".join(f"v{i},a{i},0.0\n" for i in range(60)))
    for name, result in results.items():
        result.write(tmp_path / f"{name}.csv", heatmap=False)
        for k, key_file in ((key, key), (tmp_path / "key.csv", tmp_path / "key.csv")):
            in_memory = avmatch.evaluate(result, k)
            assert in_memory == evaluate_pairs(tmp_path / f"{name}.csv", key_file), name
            assert "top1" in in_memory and (name != "timing" or k is key or "offset_mae_s" in in_memory)
    assert "in_candidates" in avmatch.evaluate(results["two-stage"], key)
    with pytest.raises(AvmatchError, match="not one-to-one"):
        avmatch.evaluate(results["dense"], {"v0": "a0", "v1": "a0"})
    with pytest.raises(AvmatchError, match="names none of the videos of the result"):
        avmatch.evaluate(results["dense"], {"w0": "a0"})


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_an_extreme_score_bias_does_not_overflow_the_index(kind):
    """A bias of -1.8e308 made the retrieval key +inf in float32: an internal error (ivf) or an
    infinite coordinate in the flat index. Now a valid one-to-one answer comes back, and a large
    shift of every score (which the dual softmax ignores) changes nothing."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal((300, 16)).astype(np.float32)
    a = v + 0.3 * rng.standard_normal(v.shape).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    extra = {"nlist": 4, "nprobe": 4} if kind == "ivf" else {}
    _, _, plain = match_embeddings(v, a, k=5, scale=10.0, kind=kind, **extra)
    assert (plain == np.arange(300)).mean() > 0.9
    _, _, shifted = match_embeddings(v, a, k=5, scale=10.0, bias=-1e6, kind=kind, **extra)
    assert np.array_equal(plain, shifted)
    _, _, extreme = match_embeddings(v, a, k=5, scale=10.0, bias=-1.8e308, kind=kind, **extra)
    assert sorted(extreme) == list(range(300))  # every score equal in float64 now: any one-to-one answer


def test_stages_are_recorded_only_when_asked(tmp_path):
    """benchmarks/scale.py reads where the time goes from the stages two-stage matching marks."""
    from avmatch.progress import recording_stages

    video, audio = planted(3000, noise=1.0)
    with recording_stages() as stages:
        scores, raw, chosen = match_embeddings(video, audio, k=10, scale=10.0, kind="ivf")
        MatchResult([f"v{i}" for i in range(3000)], [f"a{i}" for i in range(3000)], scores, chosen, "hungarian",
                    raw).write(tmp_path / "pairs.csv", heatmap=False)
    for name in ("outside mass", "index build", "search depth for recall", "retrieve top K", "re-score candidates",
                 "normalise", "assign one-to-one", "write results"):
        assert stages[name]["calls"] >= 1 and stages[name]["cpu_s"] >= 0 and stages[name]["peak_mib"] > 10, name
    assert stages["outside mass"]["calls"] == 2  # column mass for retrieval, row mass for normalising
    assert 1 <= stages["search depth for recall"]["nprobe"] <= 1000  # what the recall target chose, noted
    assert stages["search depth for recall"]["best_in_top30"] >= 0.95  # DUAL_DEPTH x K by cosine, re-ranked
    with recording_stages() as later:
        pass
    match_embeddings(video, audio, k=10, scale=10.0)  # outside any recording: nothing kept anywhere
    assert later == {} and stages["index build"]["calls"] == 1


def test_large_assignments_pair_clear_mutual_bests_first(monkeypatch):
    """Above MUTUAL_FIRST_MIN videos the sparse Hungarian fixes clear mutual best pairs first: still
    one-to-one, nearly the exact solver's answer, and the unclear pairs still go to the exact solver."""
    from avmatch.matching import two_stage

    video, audio = planted(6000, noise=1.7)
    scores = match_embeddings(video, audio, k=10, scale=10.0)[0]
    exact = assign_sparse(scores)
    monkeypatch.setattr(two_stage, "MUTUAL_FIRST_MIN", 1000)
    fast = assign_sparse(scores)
    check_one_to_one(fast, 6000)
    truth = np.arange(6000)
    assert 0.8 < (exact == truth).mean() < 1.0  # something to get wrong
    assert (fast == truth).mean() >= 0.99 * (exact == truth).mean()
    assert (fast == exact).mean() >= 0.97
    monkeypatch.setattr(two_stage, "MUTUAL_LEAD", np.inf)  # nothing clear: the exact solver's answer
    assert (assign_sparse(scores) == exact).all()
