"""Embedding index: every clip's video and audio embedding in FAISS, searched by inner product.

Embeddings are L2-normalised, so the inner product is the cosine and the model's score is
``scale * cosine + bias``. "flat" (the default) searches exactly; "ivf" and "hnsw" search
approximately and faster, and their recall against the exact search is measured when they are built.

On disk an index is a folder: ``video.faiss`` and ``audio.faiss`` (one vector per clip, in the
order of the ids) and ``index.json`` (ids, kind, parameters, score scale and bias, recall, model).
"""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from avmatch.atomic import atomic_path, file_sha256, regular, remove_stale_temps, write_text
from avmatch.checkpoint import Trained
from avmatch.corpus import Corpus
from avmatch.errors import AvmatchError
from avmatch.inference import check_fits, clip_embeddings, embedding_score_params, retrieval_metric

KINDS = ("flat", "ivf", "ivfpq", "hnsw")
COMPRESSED = ("ivfpq",)  # kinds that keep codes, not vectors: searches re-rank with the full vectors
METRICS = ("ip", "l2")  # inner product of normalised embeddings (cosine), or Euclidean distance
MAX_DIM = 1 << 16
FORMAT = "avmatch-index"
SEARCH_ROWS = 16384  # queries per faiss call: bounds the (rows, k) result buffers


def default_nlist(n: int) -> int:
    """IVF cells: about 4 sqrt(N), but at least 39 training points per cell (faiss's minimum)."""
    return int(max(1, min(4 * np.sqrt(n), n // 39)))


AUTO_FLAT_MAX = 100_000  # retrieval "auto": exact (flat) up to this many indexed clips, ivfpq above


def resolve_kind(kind: str, n: int) -> str:
    """The index kind to build for ``n`` clips: as asked, or for "auto" the exact flat index up to
    AUTO_FLAT_MAX clips (a 10^5 x 10^5 exact search is about 30 s on 2 cores) and ivfpq above (at 10^6
    it found the partner as often as ivf at 128 of 4,000 cells, 8x faster; benchmarks/scale.py)."""
    if kind == "auto":
        return "flat" if n <= AUTO_FLAT_MAX else "ivfpq"
    if kind not in KINDS:
        raise AvmatchError(f"unknown index kind {kind!r}; use auto or one of: {', '.join(KINDS)}")
    return kind


PQ_MIN = 16 * 39  # each sub-quantiser learns 16 code words (4 bits) from at least 39 points each
DEFAULT_PQ_BYTES = 32  # ivfpq: bytes of code a vector (+ 8 of id in its cell): 80 bytes a clip for both modalities


def build_index(emb: np.ndarray, kind: str = "flat", *, metric: str = "ip", nlist: int | None = None,
                nprobe: int | None = None, hnsw_m: int = 32, ef_search: int = 128, pq_bytes: int | None = None,
                seed: int = 0) -> faiss.Index:
    """A FAISS index over (N, E) embeddings, rows added in order: by inner product of normalised
    embeddings (``metric`` "ip", the cosine) or by Euclidean distance ("l2", for a model that scores
    by distance: ranking it by inner product would rank by something else than its score).

    "flat": exact. "ivf": ``nlist`` k-means cells (default :func:`default_nlist`), ``nprobe`` of them
    searched per query (default :data:`DEFAULT_NPROBE`; :func:`tune_search` sets it for a recall
    target once the queries are known). "ivfpq": the same cells holding ``pq_bytes`` bytes of product-
    quantised code a vector instead of the vector (4 bytes a dimension): 2 * ``pq_bytes`` sub-vectors
    of 4-bit codes, scanned with SIMD look-up tables (faiss's IVFPQFastScan; at 10^6 x 128 dims it
    searched 8x faster than ivf for the same recall), the dimensions zero-padded to fit; its scores
    are approximate, so :func:`search` re-ranks with the full vectors where it is given them.
    "hnsw": a graph with ``hnsw_m`` links per node, searched
    with a beam of ``ef_search``. Options out of their range are one-line errors.
    """
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, dim = emb.shape
    if metric not in METRICS:
        raise AvmatchError(f"unknown index metric {metric!r}; use one of: {', '.join(METRICS)}")
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    flat = faiss.IndexFlatIP if metric == "ip" else faiss.IndexFlatL2
    if kind == "flat":
        index = flat(dim)
    elif kind in ("ivf", "ivfpq"):
        nlist = default_nlist(n) if nlist is None else nlist
        if not 1 <= nlist <= max(1, n // 39):
            raise AvmatchError(f"--nlist {nlist}: an IVF index of {n} clips takes 1 to {max(1, n // 39)} cells "
                               "(faiss wants at least 39 clips per cell); fewer cells, or --kind flat")
        # not a share of the cells: nlist/8 made every query scan an eighth of the index (N^2/8 work)
        nprobe = min(nlist, DEFAULT_NPROBE) if nprobe is None else nprobe
        if not 1 <= nprobe <= nlist:
            raise AvmatchError(f"--nprobe {nprobe}: give 1 to nlist ({nlist}) cells to search")
        if n < 39:
            raise AvmatchError(f"an IVF index needs at least 39 clips, got {n}; use --kind flat (exact, and fast at this size)")
        if kind == "ivf":
            index = ivf = faiss.IndexIVFFlat(flat(dim), dim, nlist, faiss_metric)
        else:
            pq_bytes = DEFAULT_PQ_BYTES if pq_bytes is None else pq_bytes
            if not 1 <= pq_bytes <= 256:
                raise AvmatchError(f"--pq-bytes {pq_bytes}: give 1 to 256 bytes of code a vector")
            if n < PQ_MIN:
                raise AvmatchError(f"an IVF-PQ index needs at least {PQ_MIN} clips to learn its codes (faiss: 39 "
                                   f"a code word), got {n}; use --kind ivf or flat at this size")
            # 4-bit codes searched by SIMD look-up tables (faiss's "fast scan"): 2 sub-vectors a byte,
            # each getting whole dimensions of the zero-padded vector
            parts = 2 * pq_bytes
            padded = -(-dim // parts) * parts
            ivf = faiss.IndexIVFPQFastScan(flat(padded), padded, nlist, parts, 4, faiss_metric)
            ivf.pq.cp.seed = seed
            index = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(dim, padded, True), ivf)
        ivf.cp.seed = seed
        train = emb if n <= 256 * nlist else emb[sample_rows(n, 256 * nlist, seed)]
        index.train(train)
        ivf.nprobe = nprobe
    elif kind == "hnsw":
        if not 2 <= hnsw_m <= 256:
            raise AvmatchError(f"--hnsw-m {hnsw_m}: give 2 to 256 links per node (32 is usual)")
        if not 1 <= ef_search <= 1 << 16:
            raise AvmatchError(f"--ef-search {ef_search}: give 1 to {1 << 16}")
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss_metric)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        index.hnsw.efSearch = ef_search
    else:
        raise AvmatchError(f"unknown index kind {kind!r}; use one of: {', '.join(KINDS)}")
    for s in range(0, n, SEARCH_ROWS * 4):
        index.add(emb[s : s + SEARCH_ROWS * 4])
    return index


DEFAULT_NPROBE = 16
RECALL_TARGET = 0.95  # what tune_search aims at: the share of queries whose exact best is in the approximate top k
MATCH_RECALL_TARGET = 0.98  # two-stage matching loses every partner retrieval misses: it asks for more


def sample_rows(n: int, most: int, seed: int = 0) -> np.ndarray:
    """Up to ``most`` of rows 0..n-1, drawn without replacement by ``seed``, in order."""
    return np.sort(np.random.default_rng(seed).choice(n, min(most, n), replace=False))


def tune_search(index: faiss.Index, queries: np.ndarray, k: int = 10, target: float = RECALL_TARGET,
                sample: int = 500, seed: int = 0, full: np.ndarray | None = None,
                floor: np.ndarray | None = None) -> dict[str, float]:
    """Set an IVF index's ``nprobe`` (an HNSW index's ``efSearch``) to the smallest power of two at which
    the exact best row of at least ``target`` of a sample of ``queries`` is among the approximate top
    ``k`` (1-recall@k: what two-stage matching needs, the partner among the candidates), so the
    search costs what the recall needs and no more. Returns {"nprobe" | "ef_search": value,
    "best_in_top{k}": r, "queries": n}; a flat index (exact) is left alone. A compressed index's
    exact answer comes from ``full``, the vectors it holds (see :func:`search`), which also re-rank
    its candidates; without them its own every-cell search stands in.

    ``floor`` (one score per query; ``queries`` are then the sample, taken whole): the index is one
    shard of a larger set, and a query counts only where this shard's exact best reaches its floor (the
    score of its best row over every shard), i.e. where the shard holds that row: elsewhere finding the
    shard's own best, a far row in no particular cell, is no recall at all (tuned on every query, each
    shard of 300,000 planted clips in two searched 1,549 of its cells where one index searched 128)."""
    ivf = faiss.try_extract_index_ivf(index)
    hnsw = isinstance(index, faiss.IndexHNSW)
    if ivf is None and not hnsw:
        return {}
    k = max(1, min(k, index.ntotal))
    if floor is None:
        queries = queries[sample_rows(len(queries), sample, seed)]
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if ivf is not None:  # every cell searched: an IVF-Flat index's exact answer, with no second copy of the rows
        ivf.nprobe = ivf.nlist
        name, top, set_to = "nprobe", ivf.nlist, lambda v: setattr(ivf, "nprobe", v)
    else:
        index.hnsw.efSearch = max(1024, k)
        name, top, set_to = "ef_search", 1 << 12, lambda v: setattr(index.hnsw, "efSearch", v)
    if full is not None and is_compressed(index):
        best, exact = faiss.knn(q, np.ascontiguousarray(full, dtype=np.float32), 1, index.metric_type)
    else:
        best, exact = search(index, q, 1, full)
    if floor is not None:  # only the queries whose kept rows this shard holds
        l2 = index.metric_type == faiss.METRIC_L2
        slack = 1e-5 * np.maximum(1.0, np.abs(floor))  # the same row scored by another product's rounding
        kept = best[:, 0] <= floor + slack if l2 else best[:, 0] >= floor - slack
        q, exact = q[kept], exact[kept]
        if not len(q):
            set_to(1)
            return {name: 1, f"best_in_top{k}": float("nan"), "queries": 0}
    recalls = {}  # depth -> share of the sample whose exact best is in the approximate top k
    depth = 1
    while True:
        set_to(depth)
        _, found = search(index, q, k, full)
        recalls[depth] = float((found == exact).any(axis=1).mean())
        if recalls[depth] >= target or depth >= top:
            break
        depth = min(2 * depth, top)
    depth = shallowest_depth(recalls, target)
    set_to(depth)
    return {name: depth, f"best_in_top{k}": recalls[depth], "queries": int(len(q))}


def shallowest_depth(recalls: dict[int, float], target: float) -> int:
    """The shallowest search depth of ``recalls`` (depth -> recall, the deepest searched last) whose
    recall reaches ``target``; where none does (a compressed index's codes miss some exact bests at any
    depth), the shallowest that reaches the target's share of the deepest one's recall, not every cell
    chasing a target no depth reaches, nor all of that ceiling: near it recall creeps up a query at a
    time, and a shard of 500,000 codes reaching 0.978 there searched 2,048 of its 2,828 cells for it."""
    ceiling = recalls[max(recalls)]
    aim = target if ceiling >= target else target * ceiling
    return min(d for d, r in recalls.items() if r >= aim)


def index_bytes(index: faiss.Index) -> int:
    """The memory an index's search structure takes: codes (or vectors) and ids, cells and codebooks,
    or graph links."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        codebooks = ivf.pq.centroids.size() * 4 if hasattr(ivf, "pq") else 0
        return int(index.ntotal * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4 + codebooks)
    if isinstance(index, faiss.IndexHNSW):
        return int(index.ntotal * index.d * 4 + index.hnsw.neighbors.size() * 4 + index.hnsw.levels.size() * 4)
    return int(index.ntotal * index.d * 4)


def index_params(index: faiss.Index) -> dict:
    """The search parameters of an index, as plain values (what ``index.json`` records)."""
    metric = "l2" if index.metric_type == faiss.METRIC_L2 else "ip"
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and is_compressed(index):
        ivf = faiss.downcast_index(ivf)
        return {"kind": "ivfpq", "metric": metric, "nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe),
                "pq_bytes": int(ivf.code_size)}
    if ivf is not None:
        return {"kind": "ivf", "metric": metric, "nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe)}
    if isinstance(index, faiss.IndexHNSW):
        return {"kind": "hnsw", "metric": metric, "hnsw_m": int(index.hnsw.nb_neighbors(1)),
                "ef_search": int(index.hnsw.efSearch)}
    return {"kind": "flat", "metric": metric}


REFINE = 4  # a compressed index is searched for REFINE x k rows, re-ranked by the full vectors


def search(index: faiss.Index, queries: np.ndarray, k: int, full: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of ``index`` for each query: (Q, k) inner products (squared distances for
    an "l2" index), best first, and (Q, k) row numbers (-1 where the index holds fewer than ``k``
    rows). Queries go in chunks. ``full``: the (N, E) vectors the index holds (an array or a memory
    map), with which a compressed index's REFINE x k best are re-ranked exactly."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, index.ntotal))
    refine = full is not None and is_compressed(index)
    depth = min(index.ntotal, REFINE * k) if refine else k
    sims = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), SEARCH_ROWS):
        q = queries[s : s + SEARCH_ROWS]
        d, i = index.search(q, depth)
        if refine:
            d, i = _rerank(q, i, full, k, index.metric_type == faiss.METRIC_L2)
        sims[s : s + SEARCH_ROWS], ids[s : s + SEARCH_ROWS] = d, i
    return sims, ids


def is_compressed(index: faiss.Index) -> bool:
    """Whether the index keeps codes rather than the vectors (its scores are approximate)."""
    ivf = faiss.try_extract_index_ivf(index)
    return ivf is not None and ivf.code_size < ivf.d * 4


def _rerank(queries: np.ndarray, rows: np.ndarray, full: np.ndarray, k: int, l2: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each query's candidate ``rows`` (-1: none) by its exact score against ``full``."""
    flat = np.maximum(rows, 0).ravel()
    order = np.argsort(flat, kind="stable")  # a memory map reads fastest in file order
    cand = np.empty((len(flat), full.shape[1]), np.float32)
    cand[order] = full[flat[order]]
    cand = cand.reshape(*rows.shape, -1)
    if l2:
        score = -((cand - queries[:, None, :]) ** 2).sum(-1)
    else:
        score = np.einsum("qke,qe->qk", cand, queries)
    score[rows < 0] = -np.inf
    best = np.argsort(-score, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(score, best, 1)
    return (-picked if l2 else picked).astype(np.float32), np.take_along_axis(rows, best, 1)


def vectors(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """The stored embeddings of the given rows (an IVF index gets its direct map on first use)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map()
    rows = np.asarray(rows, dtype=np.int64)
    return index.reconstruct_batch(rows) if len(rows) else np.zeros((0, index.d), np.float32)


def measure_recall(index: faiss.Index, base: np.ndarray, queries: np.ndarray, k: int = 10,
                   max_queries: int = 1000, seed: int = 0) -> dict[str, float]:
    """Recall of ``index`` against an exact search of ``base`` (the rows it holds), on up to
    ``max_queries`` sampled queries: ``recall@1`` (the exact best row found first) and ``recall@k``
    (share of the exact top-k found in the index's top-k)."""
    k = max(1, min(k, len(base)))
    q = np.ascontiguousarray(queries[sample_rows(len(queries), max_queries, seed)], dtype=np.float32)
    _, exact = faiss.knn(q, np.ascontiguousarray(base, dtype=np.float32), k, index.metric_type)
    _, found = search(index, q, k, base)  # as the index is searched: a compressed one re-ranked by the vectors
    hits = [len(np.intersect1d(e, f[f >= 0])) for e, f in zip(exact, found, strict=True)]
    return {"queries": int(len(q)), "recall@1": float((found[:, 0] == exact[:, 0]).mean()),
            f"recall@{k}": float(np.mean(hits) / k)}


@dataclass
class EmbeddingIndex:
    """Video and audio embeddings of one corpus, searchable in both directions."""

    video_ids: list[str]
    audio_ids: list[str]
    video: faiss.Index  # rows in the order of video_ids
    audio: faiss.Index
    scale: float = 1.0  # model score = scale * cosine + bias
    bias: float = 0.0
    recall: dict = field(default_factory=dict)  # {"video->audio": {...}, "audio->video": {...}}
    model: str = ""  # the run the embeddings came from
    video_full: np.ndarray | None = None  # a compressed kind's full vectors (memory-mapped once saved)
    audio_full: np.ndarray | None = None

    @property
    def kind(self) -> str:
        return index_params(self.audio)["kind"]

    def search(self, query_ids: list[str], k: int = 5, audio: bool = False) -> list[list[tuple[str, float]]]:
        """For each query clip id the ``k`` best clips of the other modality and their model scores:
        audios for a video, or videos for an audio with ``audio=True``."""
        return self.search_vectors(self._query_vectors(query_ids, audio), k, audio)

    def similar(self, query_ids: list[str], k: int = 5, audio: bool = False) -> list[list[tuple[str, float]]]:
        """For each query clip id the ``k`` clips of its *own* modality most like it (videos for a
        video, audios for an audio with ``audio=True``), itself left out: the cosine of their
        embeddings (minus their distance for a distance model), not a video-audio score."""
        ids, index, full = self._side(audio)
        sims, rows = search(index, self._query_vectors(query_ids, audio), k + 1, full)
        if self.metric == "l2":
            sims = -np.sqrt(np.maximum(sims.astype(np.float64), 0.0) + 1e-8)
        return [[(ids[j], float(sc)) for sc, j in zip(srow, jrow, strict=True) if j >= 0 and ids[j] != q][:k]
                for q, srow, jrow in zip(query_ids, sims, rows, strict=True)]

    def _query_vectors(self, query_ids: list[str], audio: bool) -> np.ndarray:
        """The stored embeddings of the query clips (audio ones with ``audio``); an unknown id is one line."""
        ids, index, full = self._side(audio)
        row = {c: i for i, c in enumerate(ids)}
        missing = [q for q in query_ids if q not in row]
        if missing:
            raise AvmatchError(f"no {'audio' if audio else 'video'} clip {missing[0]!r} in the index"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        rows = np.array([row[q] for q in query_ids], dtype=np.int64)
        return np.asarray(full[rows], np.float32) if full is not None else vectors(index, rows)

    def _side(self, audio: bool) -> tuple[list[str], faiss.Index, np.ndarray | None]:
        """The ids, index and full vectors (or None) of the audios (``audio``) or the videos."""
        return (self.audio_ids, self.audio, self.audio_full) if audio else (self.video_ids, self.video, self.video_full)

    def search_vectors(self, queries: np.ndarray, k: int = 5, audio: bool = False) -> list[list[tuple[str, float]]]:
        """The ``k`` best clips for (Q, E) query embeddings: audios for video embeddings, or videos
        for audio embeddings with ``audio=True`` (the queries' modality)."""
        return self._ranked(*self._side(not audio), queries, k)

    @property
    def metric(self) -> str:
        return index_params(self.audio)["metric"]

    def _ranked(self, ids: list[str], index: faiss.Index, full: np.ndarray | None, queries: np.ndarray,
                k: int) -> list[list[tuple[str, float]]]:
        sims, rows = search(index, queries, k, full)
        if self.metric == "l2":  # faiss gives squared distances; the model's score is minus the distance
            scores = -np.sqrt(np.maximum(sims.astype(np.float64), 0.0) + 1e-8)
        else:
            scores = self.scale * sims.astype(np.float64) + self.bias
        return [[(ids[j], float(s)) for s, j in zip(srow, jrow, strict=True) if j >= 0]
                for srow, jrow in zip(scores, rows, strict=True)]

    def save(self, path: str | Path) -> Path:
        """Write the index folder as one set: index.json goes first and comes back last, recording a
        run id and the SHA-256 of each .faiss file of its set, so a set mixed from two runs (or left
        by a kill) is refused when loaded."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        names = ("index.json", "video.faiss", "audio.faiss", "video.npy", "audio.npy")
        for name in names:
            remove_stale_temps(path / name)
        for name in names[0], *names[3:]:  # an index being overwritten is incomplete until the end
            (path / name).unlink(missing_ok=True)
        digests = {}
        for name, full in (("video_full", self.video_full), ("audio_full", self.audio_full)):
            if full is not None:  # a compressed kind's full vectors, for re-ranking (memory-mapped when loaded)
                with atomic_path(path / f"{name[:5]}.npy") as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, np.ascontiguousarray(full, dtype=np.float32))
                    digests[name] = file_sha256(tmp)
        for name, index in (("video", self.video), ("audio", self.audio)):
            with atomic_path(path / f"{name}.faiss") as tmp:
                try:
                    faiss.write_index(index, str(tmp))
                except RuntimeError as err:  # faiss says "write error" for a full disk, a quota, ...
                    raise AvmatchError(f"could not write the index ({str(err).splitlines()[0][-120:]})",
                                       path / f"{name}.faiss") from None
                digests[name] = file_sha256(tmp)
        meta = {"format": FORMAT, "format_version": 1, "run_id": uuid.uuid4().hex, "sha256": digests,
                "params": index_params(self.audio), "dim": int(self.audio.d), "scale": self.scale,
                "bias": self.bias, "recall": self.recall, "model": self.model,
                "video_ids": list(self.video_ids), "audio_ids": list(self.audio_ids)}
        write_text(path / "index.json", json.dumps(meta))  # written last: its presence means complete
        return path


_FLAT = {b"IxFI": faiss.METRIC_INNER_PRODUCT, b"IxF2": faiss.METRIC_L2}


def _check_faiss_file(file: Path, n: int, dim: int, kind: str, pq_bytes: int = 0) -> None:
    """Check a .faiss file against what index.json says before faiss reads it: faiss allocates what
    a file's header says, so a 109-byte file could ask for gigabytes. The header's dims and vector
    count must be index.json's, and the file must be large enough to hold those vectors; a flat
    index (the default) is checked field by field, to its exact size."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(45)
    if len(head) < 37:
        raise AvmatchError(f"not a FAISS index of this kind ({size} bytes)", file)
    fourcc, d, ntotal = head[:4], *struct.unpack("<iq", head[4:16])
    if (d, ntotal) != (dim, n):
        raise AvmatchError(f"its header says {ntotal} vectors of {d} dims; index.json says {n} of {dim}", file)
    if size < n * (pq_bytes if kind in COMPRESSED else dim * 4):
        raise AvmatchError(f"{size} bytes cannot hold {n} vectors of {dim} dims: truncated or forged", file)
    expected = {"flat": tuple(_FLAT), "ivf": (b"IwFl",), "ivfpq": (b"IxPT",), "hnsw": (b"IHNf", b"IHNs")}[kind]
    if fourcc not in expected:
        raise AvmatchError(f"not a FAISS {kind} index (it starts {fourcc!r})", file)
    if kind == "flat":
        metric = struct.unpack("<i", head[33:37])[0]
        if metric != _FLAT[fourcc] or len(head) < 45 or struct.unpack("<q", head[37:45])[0] != n * dim \
                or size != 45 + 4 * n * dim:
            raise AvmatchError("malformed flat FAISS index (its sizes do not add up)", file)


def _meta_fault(meta: object) -> str:
    """What is wrong with the contents of an index.json, or ''."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return "not an avmatch index"
    if meta.get("format_version") != 1:
        return f"index format {meta.get('format_version')!r:.20} is not one this avmatch reads (1)"
    for key in ("video_ids", "audio_ids"):
        ids = meta.get(key)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return f"malformed index.json: {key} is not a list of clip names"
        if len(set(ids)) != len(ids):
            return f"malformed index.json: {key} names a clip twice"
    params = meta.get("params")
    if not isinstance(params, dict) or params.get("kind") not in KINDS or params.get("metric", "ip") not in METRICS:
        return f"malformed index.json: params do not name a kind ({', '.join(KINDS)}) and metric (ip, l2)"
    for key in ("nprobe", "ef_search", "pq_bytes"):
        value = params.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 16:
            return f"malformed index.json: params {key} is {value!r:.20}, not 1 to {1 << 16}"
    dim = meta.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        return f"malformed index.json: dim is {dim!r:.20}, not 1 to {MAX_DIM}"
    for key in ("scale", "bias"):
        value = meta.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) < 1e6:
            return f"malformed index.json: {key} is {value!r:.20}, not a finite number"
    digests = meta.get("sha256")
    if not isinstance(digests, dict) or not all(isinstance(digests.get(m), str) for m in ("video", "audio")):
        return "index.json records no SHA-256 of its .faiss files (written by an older avmatch?); index again"
    if not isinstance(meta.get("recall", {}), dict) or not isinstance(meta.get("model", ""), str):
        return "malformed index.json: recall or model"
    return ""


def load_index(path: str | Path) -> EmbeddingIndex:
    """An index folder written by :meth:`EmbeddingIndex.save`, every file checked before it is read:
    index.json's values, each .faiss file's header and size against them, and its SHA-256 against
    the one index.json recorded (a set mixed from two runs is refused)."""
    path = Path(path)
    meta_path = path / "index.json"
    if not path.is_dir() or not meta_path.exists():
        raise AvmatchError("not an avmatch index (no index.json)", path)
    regular(meta_path)
    if meta_path.stat().st_size > 1 << 30:
        raise AvmatchError("index.json larger than 1 GiB: not one avmatch wrote", meta_path)
    try:
        meta = json.loads(meta_path.read_bytes())
    except (ValueError, RecursionError) as err:
        raise AvmatchError(f"unreadable index.json ({type(err).__name__}: {str(err)[:100]})", meta_path) from None
    fault = _meta_fault(meta)
    if fault:
        raise AvmatchError(fault, meta_path)
    params = meta["params"]
    parts = {}
    for name in ("video", "audio"):
        file = regular(path / f"{name}.faiss")
        _check_faiss_file(file, len(meta[f"{name}_ids"]), meta["dim"], params["kind"], params.get("pq_bytes", 1))
        if file_sha256(file) != meta["sha256"][name]:
            raise AvmatchError("is not the file index.json recorded (from another run, or an index stopped "
                               "midway); index again", file)
        try:
            parts[name] = faiss.read_index(str(file))
        except RuntimeError as err:
            raise AvmatchError(f"unreadable FAISS index ({str(err).splitlines()[0][:120]})", file) from None
        if index_params(parts[name])["metric"] != params.get("metric", "ip"):
            raise AvmatchError(f"its metric is not index.json's ({params.get('metric', 'ip')})", file)
    for index in parts.values():  # search settings are not all kept by faiss's own format
        ivf = faiss.try_extract_index_ivf(index)
        if "nprobe" in params and ivf is not None:
            ivf.nprobe = min(params["nprobe"], ivf.nlist)
        if "ef_search" in params and isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = params["ef_search"]
    full = {name: _full_vectors(path / f"{name}.npy", len(meta[f"{name}_ids"]), meta["dim"], meta["sha256"])
            for name in ("video", "audio")} if params["kind"] in COMPRESSED else {}
    return EmbeddingIndex(meta["video_ids"], meta["audio_ids"], parts["video"], parts["audio"],
                          float(meta.get("scale", 1.0)), float(meta.get("bias", 0.0)), meta.get("recall", {}),
                          meta.get("model", ""), full.get("video"), full.get("audio"))


def _full_vectors(file: Path, n: int, dim: int, digests: dict) -> np.ndarray:
    """A compressed index's full vectors, memory-mapped once checked: shape, type and SHA-256 as
    index.json recorded them."""
    regular(file)
    if file_sha256(file) != digests.get(f"{file.stem}_full"):
        raise AvmatchError("is not the file index.json recorded (from another run, or an index stopped midway); "
                           "index again", file)
    try:
        full = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise AvmatchError(f"unreadable vectors ({str(err)[:100]})", file) from None
    if full.shape != (n, dim) or full.dtype != np.float32:
        raise AvmatchError(f"holds {full.shape} {full.dtype} vectors; index.json says ({n}, {dim}) float32", file)
    return full


def index_embeddings(video_ids: list[str], video_emb: np.ndarray, audio_ids: list[str], audio_emb: np.ndarray,
                     kind: str = "flat", scale: float = 1.0, bias: float = 0.0, model: str = "",
                     recall_k: int = 10, **options) -> EmbeddingIndex:
    """Index (Nv, E) video and (Na, E) audio embeddings; an approximate kind gets its recall measured
    in both directions (video queries against the audio index and the reverse)."""
    kind = resolve_kind(kind, max(len(video_emb), len(audio_emb)))
    video, audio = build_index(video_emb, kind, **options), build_index(audio_emb, kind, **options)
    if not {"nprobe", "ef_search"} & set(options):  # the search depth the recall target needs, each way
        tune_search(audio, video_emb, recall_k, full=audio_emb)
        tune_search(video, audio_emb, recall_k, full=video_emb)
    recall = {}
    if kind != "flat":
        recall = {"video->audio": measure_recall(audio, audio_emb, video_emb, recall_k),
                  "audio->video": measure_recall(video, video_emb, audio_emb, recall_k)}
    full = (video_emb, audio_emb) if kind in COMPRESSED else (None, None)
    return EmbeddingIndex(list(video_ids), list(audio_ids), video, audio, scale, bias, recall, model, *full)


def index_corpus(trained: Trained, corpus: Corpus, kind: str = "flat", model: str = "", **options) -> EmbeddingIndex:
    """Embed every clip of ``corpus`` with a trained model (its video and its audio, where present)
    and index the embeddings."""
    check_fits(trained, corpus, "video")
    check_fits(trained, corpus, "audio")
    v_clips = [c for c in corpus.clips if c.video is not None]
    a_clips = [c for c in corpus.clips if c.audio is not None]
    if not v_clips and not a_clips:
        raise AvmatchError("no clip to index", corpus.root)
    video_emb = clip_embeddings(trained, [c.video for c in v_clips], "video")
    audio_emb = clip_embeddings(trained, [c.audio for c in a_clips], "audio")
    scale, bias = embedding_score_params(trained)
    return index_embeddings([c.id for c in v_clips], video_emb, [c.id for c in a_clips], audio_emb, kind,
                            scale, bias, model, metric=retrieval_metric(trained), **options)
