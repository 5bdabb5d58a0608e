"""Two-stage matching for large sets: retrieve candidates, score only those, assign on a sparse graph.

Dense matching scores all Nv x Na pairs. Above DENSE_MAX x DENSE_MAX pairs
:func:`avmatch.matching.match_corpora` instead (1) embeds every clip once and retrieves each video's
top-K audios with a FAISS index (exact by default; :mod:`avmatch.matching.index`), (2) scores only
those Nv*K candidates with the trained model (for an embedding model the retrieval score is the
score), (3) normalises the candidate scores, assigns one-to-one on the sparse candidate graph and
matches the videos and audios it leaves over among themselves. Nothing of size Nv x Na is ever
allocated: the candidate scores are a scipy.sparse matrix with about K entries a row.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import csr_matrix

from avmatch.checkpoint import Trained
from avmatch.errors import AvmatchError
from avmatch.inference import (
    clip_embeddings,
    embedding_score_params,
    is_embedding_model,
    model_pair_scores,
    retrieval_metric,
)
from avmatch.matching.dense import _real_scores, assign, check_assignment, check_normalisation, normalise
from avmatch.progress import stage

DEFAULT_CANDIDATES = 10  # K, audios retrieved per video

OUTSIDE_SAMPLE = 1024  # clips sampled to estimate the softmax mass outside the candidates

_BLOCK = 1 << 24  # entries of one dense block (64 MiB of float32) in chunked products

_MAX_ROUNDS = 8  # leftover rounds before giving up on the last few

_DENSE_LEFTOVER = 1 << 22  # leftover pairs matched densely (2048 x 2048)

DUAL_DEPTH = 3  # approximate retrieval in dual-softmax order: DUAL_DEPTH x K by cosine, re-ranked



def top_k_candidates(video_emb: np.ndarray, audio_emb: np.ndarray, k: int = DEFAULT_CANDIDATES,
                     kind: str = "auto", shards: int = 0, cluster: str = "", workers: int = 2,
                     **index_options) -> tuple[np.ndarray, np.ndarray]:
    """Each video's ``k`` nearest audios by cosine (or by distance with ``metric="l2"``): (Nv, K)
    cosines (squared distances), best first, and (Nv, K) audio indices (-1 past the last audio).
    ``kind`` picks the FAISS index (exact "flat", or "ivf"/"ivfpq"/"hnsw"; "auto": flat up to
    :data:`~avmatch.matching.index.AUTO_FLAT_MAX` audios, ivfpq above). ``shards`` > 0: the audios
    cut into that many indexes, built and searched as Dask tasks on ``cluster`` (a scheduler's
    address, or "" for a local cluster of ``workers`` processes; :mod:`avmatch.matching.shards`)."""
    from avmatch.matching.index import (
        MATCH_RECALL_TARGET,
        build_index,
        index_bytes,
        resolve_kind,
        search,
        tune_search,
    )

    kind = resolve_kind(kind, len(audio_emb))

    if shards:
        from avmatch.matching.shards import sharded_top_k

        with stage("retrieve top K (shards on Dask)") as note:
            sims, rows, records = sharded_top_k(video_emb, audio_emb, k, kind, shards=shards, cluster=cluster,
                                                workers=workers, **index_options)
            note.update(shards=len(records), nprobe=max((r.get("nprobe", 0) for r in records), default=0),
                        kept=sum(bool(r.get("kept")) for r in records))
            for phase in ("build_s", "tune_s", "search_s"):  # the slowest shard's, in its worker
                note[f"shard {phase}"] = max(r[phase] for r in records)
        return sims, rows

    with stage("index build") as note:
        index = build_index(audio_emb, kind, **index_options)
        note["bytes_a_clip"] = round(index_bytes(index) / max(1, len(audio_emb)), 1)
    if not {"nprobe", "ef_search"} & set(index_options):  # as deep as the recall target needs
        with stage("search depth for recall") as note:
            note.update(tune_search(index, video_emb, k, MATCH_RECALL_TARGET, full=audio_emb))
    with stage("retrieve top K"):
        return search(index, video_emb, k, full=audio_emb)


def embedding_pair_scores(video_emb: np.ndarray, audio_emb: np.ndarray, scale: float = 1.0, bias: float = 0.0):
    """A pair scorer ``(video_rows, audio_rows) -> scores`` for the score ``scale * cosine + bias``."""

    def score(vi: np.ndarray, ai: np.ndarray) -> np.ndarray:
        out = np.empty(len(vi), np.float64)
        step = max(1, _BLOCK // max(1, video_emb.shape[1]))
        for s in range(0, len(vi), step):
            v, a = video_emb[vi[s : s + step]], audio_emb[ai[s : s + step]]
            out[s : s + step] = scale * np.einsum("ij,ij->i", v, a).astype(np.float64) + bias
        return out

    return score


def candidate_matrix(video_rows: np.ndarray, audio_rows: np.ndarray, values: np.ndarray,
                     shape: tuple[int, int]) -> csr_matrix:
    """Sparse (Nv, Na) scores from (video, audio, score) triples (pairs with audio -1 are dropped).
    Every triple is an explicit entry, whatever its score (zero included)."""
    video_rows, audio_rows = np.asarray(video_rows), np.asarray(audio_rows)
    keep = audio_rows >= 0
    video_rows, audio_rows = video_rows[keep], audio_rows[keep]
    values = np.asarray(values, dtype=np.float64)[keep]
    order = np.lexsort((audio_rows, video_rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(video_rows, minlength=shape[0]))])
    return csr_matrix((values[order], audio_rows[order], indptr), shape=shape)


def _log_mass(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """log sum exp along ``dim`` that is -inf (not NaN) where every entry is -inf."""
    return torch.nan_to_num(torch.logsumexp(scores, dim), nan=-np.inf)


def outside_log_mass(video_emb: np.ndarray, audio_emb: np.ndarray, cand_idx: np.ndarray, scale: float = 1.0,
                     bias: float = 0.0, sample: int = OUTSIDE_SAMPLE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """log of the softmax mass ``sum exp(score)`` that falls outside the candidates: (Nv,) over each
    video's non-candidate audios (:func:`row_log_mass`) and (Na,) over each audio's non-candidate
    videos (:func:`column_log_mass`). Exact when ``sample`` covers every clip; with it the sparse dual
    softmax equals the dense one on the candidates."""
    return (row_log_mass(video_emb, audio_emb, cand_idx, scale, bias, sample, seed),
            column_log_mass(video_emb, audio_emb, scale, bias, sample, seed + 1, cand_idx))


def row_log_mass(video_emb: np.ndarray, audio_emb: np.ndarray, cand_idx: np.ndarray, scale: float = 1.0,
                 bias: float = 0.0, sample: int = OUTSIDE_SAMPLE, seed: int = 0) -> np.ndarray:
    """(Nv,) log of each video's softmax mass over the audios that are not its candidates
    (``cand_idx`` (Nv, K), -1: none): estimated from ``sample`` random audios and scaled up."""
    nv, na = len(video_emb), len(audio_emb)
    V, A = torch.from_numpy(np.ascontiguousarray(video_emb)), torch.from_numpy(np.ascontiguousarray(audio_emb))
    cand = torch.from_numpy(np.asarray(cand_idx, dtype=np.int64))
    pick = np.sort(np.random.default_rng(seed).choice(na, min(sample, na), replace=False))
    slot = torch.full((na + 1,), -1, dtype=torch.long)  # audio -> its column in the sample; slot[-1] for "none"
    slot[torch.from_numpy(pick)] = torch.arange(len(pick))
    sampled = A[torch.from_numpy(pick)]
    out = torch.empty(nv, dtype=torch.float64)
    step = max(1, _BLOCK // max(1, len(pick)))
    for s in range(0, nv, step):
        block = (scale * (V[s : s + step] @ sampled.T) + bias).double()  # (b, m)
        hit = slot[cand[s : s + step]]  # (b, K)
        r, c = torch.nonzero(hit >= 0, as_tuple=True)
        block[r, hit[r, c]] = -np.inf
        out[s : s + step] = _log_mass(block, 1) + np.log(na / len(pick))
    return out.numpy()


def column_log_mass(video_emb: np.ndarray, audio_emb: np.ndarray, scale: float = 1.0, bias: float = 0.0,
                    sample: int = OUTSIDE_SAMPLE, seed: int = 0, cand_idx: np.ndarray | None = None,
                    k: int = DEFAULT_CANDIDATES) -> np.ndarray:
    """(Na,) log of each audio's softmax mass over the videos, outside their candidates: estimated
    from ``sample`` random videos, each with its candidates (``cand_idx``, or else its own top-``k``
    audios) left out, and scaled up.

    Without candidates it is the "bulk" of each column: large for a hub audio, one that scores
    high against videos in general, and not inflated by the one video an audio belongs to.

    The audios are taken in blocks against the whole sample (a (sample, block) product each), the
    sampled videos' own top k found by FAISS first: one video's row at a time, each of the 1,024 a
    product with every audio, took about 20 minutes at 10^7 audios."""
    import faiss

    nv, na = len(video_emb), len(audio_emb)
    V, A = torch.from_numpy(np.ascontiguousarray(video_emb)), torch.from_numpy(np.ascontiguousarray(audio_emb))
    pick = np.sort(np.random.default_rng(seed).choice(nv, min(sample, nv), replace=False))
    sampled = V[torch.from_numpy(pick)]
    if cand_idx is not None:
        cand = torch.from_numpy(np.asarray(cand_idx[pick], dtype=np.int64))
    else:  # each sampled video's top k by its score, which follows the cosine (against it if scale < 0)
        ip = np.ascontiguousarray(np.sign(scale or 1.0) * sampled.numpy(), dtype=np.float32)
        cand = torch.from_numpy(faiss.knn(ip, np.ascontiguousarray(audio_emb, dtype=np.float32), min(k, na),
                                          faiss.METRIC_INNER_PRODUCT)[1])
    out = torch.empty(na, dtype=torch.float64)
    step = max(1, _BLOCK // len(pick))
    for s in range(0, na, step):
        block = (scale * (sampled @ A[s : s + step].T) + bias).double()  # (sample, b)
        r, c = torch.nonzero((cand >= s) & (cand < s + step), as_tuple=True)
        block[r, cand[r, c] - s] = -np.inf
        out[s : s + step] = _log_mass(block, 0)
    return torch.nan_to_num(out + np.log(nv / len(pick)), nan=-np.inf).numpy()


def _group_log_mass(values: np.ndarray, groups: np.ndarray, n: int, rest: np.ndarray | None) -> np.ndarray:
    """log sum exp of ``values`` per group (n groups), plus each group's mass ``rest`` (log)."""
    top = np.full(n, -np.inf)
    np.maximum.at(top, groups, values)
    if rest is not None:
        top = np.maximum(top, rest)
    top = np.where(np.isfinite(top), top, 0.0)
    mass = np.bincount(groups, np.exp(values - top[groups]), minlength=n)
    if rest is not None:
        mass += np.exp(rest - top)
    with np.errstate(divide="ignore"):
        return np.log(mass) + top


def _rows_of(scores: csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))


def log_normalisers(scores: csr_matrix, row_rest: np.ndarray | None = None,
                    col_rest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Nv,) and (Na,) log softmax denominators of the rows and columns of a sparse score matrix:
    over its entries plus, where given, the log mass outside them."""
    values = _real_scores(scores.data, summed=False)
    return (_group_log_mass(values, _rows_of(scores), scores.shape[0], row_rest),
            _group_log_mass(values, scores.indices, scores.shape[1], col_rest))


def normalise_sparse(scores: csr_matrix, method: str = "dual-softmax", row_rest: np.ndarray | None = None,
                     col_rest: np.ndarray | None = None) -> csr_matrix:
    """:func:`normalise` on the candidate entries of a sparse score matrix.

    A candidate's score becomes its log-probability among its row plus among its column. The
    softmax sums run over the candidates plus, where given, the (log) mass outside them
    (:func:`outside_log_mass`), so a hub audio is discounted as in the dense case; without
    ``row_rest``/``col_rest`` they run over the candidates alone (a hub is then the audio that is a
    candidate of many videos).
    """
    if check_normalisation(method) == "none":
        return scores
    row_lse, col_lse = log_normalisers(scores, row_rest, col_rest)
    values = _real_scores(scores.data, summed=False)
    norm = (values - row_lse[_rows_of(scores)]) + (values - col_lse[scores.indices])
    return csr_matrix((norm, scores.indices.copy(), scores.indptr.copy()), shape=scores.shape)


def greedy_one_to_one(scores: csr_matrix) -> np.ndarray:
    """One-to-one by descending score: in rounds, every free video proposes its best free audio and
    every audio keeps its best proposer. Used where no full matching exists on the candidate graph."""
    values = _real_scores(scores.data, summed=False)
    order = np.argsort(-values, kind="stable")
    rows, cols = _rows_of(scores)[order], scores.indices[order]
    chosen = np.full(scores.shape[0], -1, dtype=np.int64)
    taken = np.zeros(scores.shape[1], dtype=bool)
    while True:
        alive = (chosen[rows] < 0) & ~taken[cols]
        if not alive.any():
            return chosen
        rows, cols = rows[alive], cols[alive]
        _, first = np.unique(rows, return_index=True)  # each free video's best free audio
        proposals = np.sort(first)  # back in descending score order
        _, win = np.unique(cols[proposals], return_index=True)  # each audio's best proposer
        win = proposals[win]
        chosen[rows[win]] = cols[win]
        taken[cols[win]] = True


def assign_sparse(scores: csr_matrix, method: str = "hungarian") -> np.ndarray:
    """:func:`assign` on a sparse candidate graph: the audio index for each video, -1 = unmatched.

    "hungarian": the one-to-one assignment of maximum total score on the candidate graph (scipy's
    min_weight_full_bipartite_matching, LAPJVsp). A video may stay unmatched, at the worth of its
    weakest candidate (with exact retrieval no audio outside its candidates scores higher), so a
    full matching always exists; should the solver still find none, a greedy one-to-one is used.
    "greedy": each video's best candidate, which may repeat.
    """
    check_assignment(method)
    nv, na = scores.shape
    chosen = np.full(nv, -1, dtype=np.int64)
    if scores.nnz == 0:
        return chosen
    values = _real_scores(scores.data)
    rows = _rows_of(scores)
    if method == "greedy":
        order = np.lexsort((-values, rows))
        firsts = order[np.concatenate([[True], rows[order][1:] != rows[order][:-1]])]
        chosen[rows[firsts]] = scores.indices[firsts]
        return chosen
    if nv > MUTUAL_FIRST_MIN:
        return _mutual_best_first(scores, values, rows)
    return _exact_sparse(scores, values, rows)


def _exact_sparse(scores: csr_matrix, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The maximum-score one-to-one assignment of a sparse score matrix (LAPJVsp), -1 = unmatched."""
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    nv, na = scores.shape
    chosen = np.full(nv, -1, dtype=np.int64)
    if scores.nnz == 0:
        return chosen
    weight = values - values.min() + 1.0  # the solver wants non-zero weights
    weakest = np.ones(nv)
    counts = np.diff(scores.indptr)
    weakest[counts > 0] = np.minimum.reduceat(weight, scores.indptr[:-1][counts > 0])
    unmatched = weakest - 1e-9 * (weight.max() + 1.0)  # just below the weakest candidate, still > 0
    graph = csr_matrix((np.concatenate([weight, unmatched]),
                        (np.concatenate([rows, np.arange(nv)]), np.concatenate([scores.indices, na + np.arange(nv)]))),
                       shape=(nv, na + nv))
    try:
        r, c = min_weight_full_bipartite_matching(graph, maximize=True)
    except ValueError:
        return greedy_one_to_one(scores)
    real = c < na
    chosen[r[real]] = c[real]
    return chosen


MUTUAL_FIRST_MIN = 200_000  # above this many videos, clear mutual best pairs are fixed before the exact solver
MUTUAL_LEAD = 2.0  # what makes one clear: its score this far above the next candidate's, in its row and its column


def _best_and_lead(values: np.ndarray, groups: np.ndarray, other: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group (row or column): the ``other`` index of its best entry (-1: none) and that entry's
    lead over the group's second best (inf with one entry)."""
    order = np.lexsort((-values, groups))
    g = groups[order]
    first = np.concatenate([[True], g[1:] != g[:-1]])
    best, lead = np.full(n, -1, dtype=np.int64), np.full(n, np.inf)
    best[g[first]] = other[order[first]]
    second = np.flatnonzero(~first[1:] & first[:-1]) + 1  # the entry right after a group's first
    lead[g[second]] = values[order[second - 1]] - values[order[second]]
    return best, lead


def _mutual_best_first(scores: csr_matrix, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Hungarian at scale: a video and an audio that are each other's best candidate by a clear lead
    (MUTUAL_LEAD) are paired first, and the exact solver runs on what is left. LAPJVsp's time grew as
    N^1.9 here (104 s for 3 x 10^5 videos of 10 candidates, about 20 minutes projected for 10^6). On
    50,000 planted pairs this kept 99.9% (noise 1.5) and 99.8% (noise 2.0) of the exact solver's
    accuracy, the same pair for 99.7% and 98.9% of the videos, in 1.4 s and 6.5 s instead of 3.7 s
    and 7.4 s; the saving grows with N and with how sure the pairs are."""
    nv, na = scores.shape
    cols = scores.indices
    best_col, row_lead = _best_and_lead(values, rows, cols, nv)
    best_row, col_lead = _best_and_lead(values, cols, rows, na)
    chosen = np.full(nv, -1, dtype=np.int64)
    mutual = (best_col >= 0) & (best_row[np.maximum(best_col, 0)] == np.arange(nv))
    # only the clear ones: a lead over the next candidate in the row and in the column
    mutual &= (row_lead >= MUTUAL_LEAD) & (col_lead[np.maximum(best_col, 0)] >= MUTUAL_LEAD)
    chosen[mutual] = best_col[mutual]
    free_v, taken = np.flatnonzero(~mutual), np.zeros(na, dtype=bool)
    taken[chosen[mutual]] = True
    free_a = np.flatnonzero(~taken)
    if len(free_v) and len(free_a):
        keep = ~mutual[rows] & ~taken[cols]
        col_of = np.full(na, -1, dtype=np.int64)
        col_of[free_a] = np.arange(len(free_a))
        row_of = np.full(nv, -1, dtype=np.int64)
        row_of[free_v] = np.arange(len(free_v))
        sub = candidate_matrix(row_of[rows[keep]], col_of[cols[keep]], values[keep], (len(free_v), len(free_a)))
        # what is left is solved exactly (again mutual best first while it is large and some pair is mutual)
        got = assign_sparse(sub, "hungarian") if mutual.any() else _exact_sparse(sub, sub.data, _rows_of(sub))
        chosen[free_v[got >= 0]] = free_a[got[got >= 0]]
    return chosen


def sparse_lookup(scores: csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Scores at (rows[i], cols[i]), NaN where that pair is no entry (or cols[i] < 0)."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    out = np.full(len(rows), np.nan)
    if not scores.has_sorted_indices:
        scores = scores.sorted_indices()
    keys = _rows_of(scores).astype(np.int64) * scores.shape[1] + scores.indices
    ok = cols >= 0
    if not len(keys) or not ok.any():
        return out
    want = rows[ok] * scores.shape[1] + cols[ok]
    pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    found = keys[pos] == want
    vals = np.full(len(want), np.nan)
    vals[found] = scores.data[pos[found]]
    out[ok] = vals
    return out


def margins_sparse(scores: csr_matrix, chosen: np.ndarray) -> np.ndarray:
    """:func:`margins` over the candidates: the chosen audio's score minus the best other candidate's."""
    nv = scores.shape[0]
    values = _real_scores(scores.data, summed=False)
    counts = np.diff(scores.indptr)
    order = np.lexsort((-values, _rows_of(scores)))  # per row, best first
    first = scores.indptr[:-1]
    best, second = np.full(nv, np.nan), np.full(nv, np.nan)
    best[counts >= 1] = values[order[first[counts >= 1]]]
    second[counts >= 2] = values[order[first[counts >= 2] + 1]]
    own = sparse_lookup(csr_matrix((values, scores.indices, scores.indptr), shape=scores.shape), np.arange(nv), chosen)
    return np.where(own >= best, own - second, own - best)


def match_sparse(video_emb: np.ndarray, audio_emb: np.ndarray, pair_scores, k: int = DEFAULT_CANDIDATES,
                 method: str = "hungarian", normalisation: str = "dual-softmax", kind: str = "auto",
                 outside: tuple[float, float] | None = None, outside_sample: int = OUTSIDE_SAMPLE,
                 _round: int = 0, **index_options
                 ) -> tuple[csr_matrix, csr_matrix, np.ndarray]:
    """Two-stage matching: retrieve each video's top-``k`` audios by the cosine of (Nv, E) and (Na, E)
    embeddings, score them with ``pair_scores(video_rows, audio_rows)``, normalise, assign.

    Returns (normalised scores, raw scores, chosen audio per video, -1 = unmatched); the sparse
    matrices hold the candidates and every chosen pair. ``outside`` = (scale, bias) when the pair
    score is ``scale * cosine + bias``: the dual softmax then also counts the mass outside the
    candidates (:func:`row_log_mass`, :func:`column_log_mass`, from ``outside_sample`` clips), and
    retrieval ranks by the dual softmax too (the cosine less each audio's column mass, so hub audios
    do not crowd out the candidates); else it runs over the candidates alone. With "hungarian", the
    videos and audios the candidate graph leaves over are matched among themselves (densely once
    they are few, else by another two-stage round).
    """
    check_normalisation(normalisation)
    check_assignment(method)
    nv, na = len(video_emb), len(audio_emb)
    dual = normalisation == "dual-softmax" and outside is not None and outside_sample > 0
    if dual:  # retrieve in dual-softmax order: scale * cosine minus the audio's column bulk
        with stage("outside mass"):
            bulk = column_log_mass(video_emb, audio_emb, *outside, sample=outside_sample, k=k)
        bulk = np.where(np.isfinite(bulk), bulk, bulk[np.isfinite(bulk)].min(initial=0.0))
        # only the order matters here: shifted to peak at 0 and bounded, so float32 (FAISS) cannot overflow
        key = np.clip(bulk - bulk.max(initial=0.0), -1e30, 0.0).astype(np.float32)
        from avmatch.matching.index import resolve_kind

        if resolve_kind(kind, na) == "flat":  # exact: the key as one more coordinate
            _, idx = top_k_candidates(np.hstack([outside[0] * video_emb, np.ones((nv, 1), np.float32)]),
                                      np.hstack([audio_emb, -key[:, None]]), k, kind, **index_options)
        else:  # an approximate index's cells follow direction, which such a coordinate would swamp (at 3 x 10^5
            # clips ivfpq then needed 1,024 of 2,191 cells): DUAL_DEPTH x k by cosine, the best k of them by the key
            cos, deep = top_k_candidates(video_emb, audio_emb, DUAL_DEPTH * k, kind, **index_options)
            idx = np.empty((nv, min(k, deep.shape[1])), np.int64)
            step = max(1, _BLOCK // deep.shape[1])  # in blocks: at 10^7 videos each (N, 3K) temporary is 1.2 GB
            for s in range(0, nv, step):
                c, d = cos[s : s + step], deep[s : s + step]
                order = np.where(d >= 0, outside[0] * c - key[np.maximum(d, 0)], -np.inf)
                idx[s : s + step] = np.take_along_axis(d, np.argsort(-order, axis=1, kind="stable")[:, :k], 1)
            del cos, deep
    else:
        _, idx = top_k_candidates(video_emb, audio_emb, k, kind, **index_options)
    vi = np.repeat(np.arange(nv), idx.shape[1])
    raw = candidate_matrix(vi, idx.ravel(), np.zeros(idx.size), (nv, na))
    with stage("re-score candidates"):
        raw.data = pair_scores(_rows_of(raw), raw.indices)
    with stage("outside mass"):
        # the column bulk left out each sampled video's own top-k: its candidates, near enough
        rest = (row_log_mass(video_emb, audio_emb, idx, *outside, sample=outside_sample), bulk) if dual else (None, None)
    with stage("normalise"):
        scores = normalise_sparse(raw, normalisation, *rest)
    with stage("assign one-to-one"):
        chosen = assign_sparse(scores, method)
    if method != "hungarian":
        return scores, raw, chosen

    # the leftovers: matched among themselves, then added to the candidate matrices
    used = np.zeros(na, dtype=bool)
    used[chosen[chosen >= 0]] = True
    lv, la = np.flatnonzero(chosen < 0), np.flatnonzero(~used)
    if not len(lv) or not len(la) or _round >= _MAX_ROUNDS:
        return scores, raw, chosen
    with stage("leftovers (all stages)"):
        sub = _match_leftovers(video_emb, audio_emb, pair_scores, lv, la, k, method, normalisation, kind, outside,
                               outside_sample, _round, index_options)
    got = sub >= 0
    fv, fa = lv[got], la[sub[got]]
    chosen[fv] = fa
    fs = fn = pair_scores(fv, fa)
    if normalisation == "dual-softmax":  # the same row and column denominators, now counting the new pair
        row_lse, col_lse = log_normalisers(raw, *rest)
        fn = 2 * fs - np.logaddexp(row_lse[fv], fs) - np.logaddexp(col_lse[fa], fs)
    rows, cols = np.concatenate([_rows_of(raw), fv]), np.concatenate([raw.indices, fa])
    raw = candidate_matrix(rows, cols, np.concatenate([raw.data, fs]), (nv, na))
    scores = candidate_matrix(rows, cols, np.concatenate([scores.data, fn]), (nv, na))
    return scores, raw, chosen


def _match_leftovers(video_emb, audio_emb, pair_scores, lv: np.ndarray, la: np.ndarray, k: int, method: str,
                     normalisation: str, kind: str, outside, outside_sample: int, _round: int,
                     index_options: dict) -> np.ndarray:
    """The videos ``lv`` and audios ``la`` the candidate graph left over, matched among themselves:
    densely once they are few, else by another two-stage round. The audio (index into ``la``) per video."""
    if len(lv) * len(la) <= _DENSE_LEFTOVER:
        sub_raw = pair_scores(np.repeat(lv, len(la)), np.tile(la, len(lv))).reshape(len(lv), len(la))
        return assign(normalise(sub_raw, normalisation))
    return match_sparse(video_emb[lv], audio_emb[la], lambda v, a: pair_scores(lv[v], la[a]), k, method,
                        normalisation, kind, outside, outside_sample, _round + 1, **index_options)[2]


def match_embeddings(video_emb: np.ndarray, audio_emb: np.ndarray, k: int = DEFAULT_CANDIDATES,
                     scale: float = 1.0, bias: float = 0.0, method: str = "hungarian",
                     normalisation: str = "dual-softmax", kind: str = "auto", outside_sample: int = OUTSIDE_SAMPLE,
                     **index_options) -> tuple[csr_matrix, csr_matrix, np.ndarray]:
    """:func:`match_sparse` for an embedding model: the pair score is ``scale * cosine + bias``.
    ``outside_sample`` = 0 normalises over the candidates alone."""
    return match_sparse(video_emb, audio_emb, embedding_pair_scores(video_emb, audio_emb, scale, bias), k, method,
                        normalisation, kind, (scale, bias), outside_sample, **index_options)


def match_two_stage(trained: Trained, videos: list[np.ndarray], audios: list[np.ndarray],
                    method: str = "hungarian", normalisation: str = "dual-softmax", k: int = DEFAULT_CANDIDATES,
                    retriever: Trained | None = None, kind: str = "auto", max_lag: int | None = None,
                    **sharding) -> tuple[csr_matrix, csr_matrix, np.ndarray]:
    """Match clips by retrieving each video's top-``k`` audios with an embedding model (``retriever``,
    by default the trained model) and scoring only those with the trained model (a timing model
    over ``max_lag`` frames either side; None: as trained). ``sharding``: :func:`top_k_candidates`'s
    shards, cluster and workers. Returns what :func:`match_sparse` does."""
    finder = retriever or trained
    if retriever is not None:
        for name, want, have in (("visual", trained.model.config["video_dim"], retriever.model.config["video_dim"]),
                                 ("audio", trained.model.config["audio_dim"], retriever.model.config["audio_dim"])):
            if want != have:
                raise AvmatchError(f"retriever takes {have}-dim {name} features but the model takes {want}")
    video_emb = clip_embeddings(finder, videos, "video")
    audio_emb = clip_embeddings(finder, audios, "audio")
    if finder is trained and is_embedding_model(trained):  # the retrieval score is the score
        scale, bias = embedding_score_params(trained)
        scores, raw, chosen = match_embeddings(video_emb, audio_emb, k, scale, bias, method, normalisation, kind,
                                               **sharding)
    else:
        scores, raw, chosen = match_sparse(video_emb, audio_emb, model_pair_scores(trained, videos, audios, max_lag=max_lag), k,
                                           method, normalisation, kind, metric=retrieval_metric(finder), **sharding)
    return scores, raw, chosen

