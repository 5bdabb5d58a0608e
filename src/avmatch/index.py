"""Embedding index: every clip's video and audio embedding in FAISS, searched by inner product.

Embeddings are L2-normalised, so the inner product is the cosine and the model's score is
``scale * cosine + bias``. "flat" (the default) searches exactly; "ivf" and "hnsw" search
approximately and faster, and their recall against the exact search is measured when they are built.

On disk an index is a folder: ``video.faiss`` and ``audio.faiss`` (one vector per clip, in the
order of the ids) and ``index.json`` (ids, kind, parameters, score scale and bias, recall, model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from avmatch.atomic import atomic_path, write_text
from avmatch.errors import AvmatchError

if TYPE_CHECKING:
    from avmatch.checkpoint import Trained
    from avmatch.corpus import Corpus

KINDS = ("flat", "ivf", "hnsw")
FORMAT = "avmatch-index"
SEARCH_ROWS = 16384  # queries per faiss call: bounds the (rows, k) result buffers


def default_nlist(n: int) -> int:
    """IVF cells: about 4 sqrt(N), but at least 39 training points per cell (faiss's minimum)."""
    return int(max(1, min(4 * np.sqrt(n), n // 39)))


def build_index(emb: np.ndarray, kind: str = "flat", *, nlist: int | None = None, nprobe: int | None = None,
                hnsw_m: int = 32, ef_search: int = 128, seed: int = 0) -> faiss.Index:
    """A FAISS inner-product index over (N, E) normalised embeddings, rows added in order.

    "flat": exact. "ivf": ``nlist`` k-means cells (default :func:`default_nlist`), ``nprobe`` of them
    searched per query (default nlist/8). "hnsw": a graph with ``hnsw_m`` links per node, searched
    with a beam of ``ef_search``.
    """
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, dim = emb.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = nlist or default_nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        train = emb if n <= 256 * nlist else emb[np.sort(rng.choice(n, 256 * nlist, replace=False))]
        index.train(train)
        index.nprobe = nprobe or max(1, nlist // 8)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        index.hnsw.efSearch = ef_search
    else:
        raise AvmatchError(f"unknown index kind {kind!r}; use one of: {', '.join(KINDS)}")
    for s in range(0, n, SEARCH_ROWS * 4):
        index.add(emb[s : s + SEARCH_ROWS * 4])
    return index


def index_params(index: faiss.Index) -> dict:
    """The search parameters of an index, as plain values (what ``index.json`` records)."""
    if isinstance(index, faiss.IndexIVF):
        return {"kind": "ivf", "nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    if isinstance(index, faiss.IndexHNSW):
        return {"kind": "hnsw", "hnsw_m": int(index.hnsw.nb_neighbors(1)), "ef_search": int(index.hnsw.efSearch)}
    return {"kind": "flat"}


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of ``index`` for each query: (Q, k) inner products, best first, and (Q, k)
    row numbers (-1 where the index holds fewer than ``k`` rows). Queries go in chunks."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, index.ntotal))
    sims = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), SEARCH_ROWS):
        sims[s : s + SEARCH_ROWS], ids[s : s + SEARCH_ROWS] = index.search(queries[s : s + SEARCH_ROWS], k)
    return sims, ids


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
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(queries), min(max_queries, len(queries)), replace=False))
    q = np.ascontiguousarray(queries[pick], dtype=np.float32)
    _, exact = search(build_index(base, "flat"), q, k)
    _, found = search(index, q, k)
    hits = [len(np.intersect1d(e, f[f >= 0])) for e, f in zip(exact, found, strict=True)]
    return {"queries": int(len(pick)), "recall@1": float((found[:, 0] == exact[:, 0]).mean()),
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

    @property
    def kind(self) -> str:
        return index_params(self.audio)["kind"]

    def search(self, query_ids: list[str], k: int = 5, audio: bool = False) -> list[list[tuple[str, float]]]:
        """For each query clip id the ``k`` best clips of the other modality and their model scores:
        audios for a video, or videos for an audio with ``audio=True``."""
        own_ids, own, other_ids, other = ((self.audio_ids, self.audio, self.video_ids, self.video) if audio
                                          else (self.video_ids, self.video, self.audio_ids, self.audio))
        row = {c: i for i, c in enumerate(own_ids)}
        missing = [q for q in query_ids if q not in row]
        if missing:
            raise AvmatchError(f"no {'audio' if audio else 'video'} clip {missing[0]!r} in the index"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return self._ranked(other, other_ids, vectors(own, np.array([row[q] for q in query_ids])), k)

    def search_vectors(self, queries: np.ndarray, k: int = 5, audio: bool = False) -> list[list[tuple[str, float]]]:
        """The ``k`` best clips for (Q, E) query embeddings: audios for video embeddings, or videos
        for audio embeddings with ``audio=True`` (the queries' modality)."""
        return self._ranked(self.video, self.video_ids, queries, k) if audio else \
            self._ranked(self.audio, self.audio_ids, queries, k)

    def _ranked(self, index: faiss.Index, ids: list[str], queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        sims, rows = search(index, queries, k)
        return [[(ids[j], float(self.scale * s + self.bias)) for s, j in zip(srow, jrow, strict=True) if j >= 0]
                for srow, jrow in zip(sims, rows, strict=True)]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "index.json").unlink(missing_ok=True)  # an index being overwritten is incomplete until the end
        for name, index in (("video", self.video), ("audio", self.audio)):
            with atomic_path(path / f"{name}.faiss") as tmp:
                faiss.write_index(index, str(tmp))
        meta = {"format": FORMAT, "format_version": 1, "params": index_params(self.audio),
                "dim": int(self.audio.d), "scale": self.scale, "bias": self.bias, "recall": self.recall,
                "model": self.model, "video_ids": list(self.video_ids), "audio_ids": list(self.audio_ids)}
        write_text(path / "index.json", json.dumps(meta))  # written last: its presence means complete
        return path


def load_index(path: str | Path) -> EmbeddingIndex:
    path = Path(path)
    meta_path = path / "index.json"
    if not meta_path.is_file():
        raise AvmatchError("not an avmatch index (no index.json)", path)
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as err:
        raise AvmatchError(f"unreadable index.json ({err})", path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AvmatchError("not an avmatch index", meta_path)
    parts = {}
    for name in ("video", "audio"):
        file = path / f"{name}.faiss"
        try:
            parts[name] = faiss.read_index(str(file))
        except RuntimeError as err:
            raise AvmatchError(f"unreadable FAISS index ({str(err).splitlines()[0][:120]})", file) from None
        if parts[name].ntotal != len(meta[f"{name}_ids"]):
            raise AvmatchError(f"holds {parts[name].ntotal} vectors but index.json names {len(meta[f'{name}_ids'])} clips", file)
    params = meta.get("params", {})
    for index in parts.values():  # search settings are not all kept by faiss's own format
        if "nprobe" in params and isinstance(index, faiss.IndexIVF):
            index.nprobe = params["nprobe"]
        if "ef_search" in params and isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = params["ef_search"]
    return EmbeddingIndex(meta["video_ids"], meta["audio_ids"], parts["video"], parts["audio"],
                          float(meta.get("scale", 1.0)), float(meta.get("bias", 0.0)), meta.get("recall", {}),
                          meta.get("model", ""))


def index_embeddings(video_ids: list[str], video_emb: np.ndarray, audio_ids: list[str], audio_emb: np.ndarray,
                     kind: str = "flat", scale: float = 1.0, bias: float = 0.0, model: str = "",
                     recall_k: int = 10, **options) -> EmbeddingIndex:
    """Index (Nv, E) video and (Na, E) audio embeddings; an approximate kind gets its recall measured
    in both directions (video queries against the audio index and the reverse)."""
    video, audio = build_index(video_emb, kind, **options), build_index(audio_emb, kind, **options)
    recall = {}
    if kind != "flat":
        recall = {"video->audio": measure_recall(audio, audio_emb, video_emb, recall_k),
                  "audio->video": measure_recall(video, video_emb, audio_emb, recall_k)}
    return EmbeddingIndex(list(video_ids), list(audio_ids), video, audio, scale, bias, recall, model)


def index_corpus(trained: Trained, corpus: Corpus, kind: str = "flat", model: str = "", **options) -> EmbeddingIndex:
    """Embed every clip of ``corpus`` with a trained model (its video and its audio, where present)
    and index the embeddings."""
    from avmatch.match import clip_embeddings, embedding_score_params

    cfg = trained.model.config
    for name, dim, want in (("visual", corpus.video_dim, cfg["video_dim"]), ("audio", corpus.audio_dim, cfg["audio_dim"])):
        if dim is not None and dim != want:
            raise AvmatchError(f"{name} features have {dim} dims but the model was trained on {want}", corpus.root)
    v_clips = [c for c in corpus.clips if c.video is not None]
    a_clips = [c for c in corpus.clips if c.audio is not None]
    if not v_clips and not a_clips:
        raise AvmatchError("no clip to index", corpus.root)
    video_emb = clip_embeddings(trained, [c.video for c in v_clips], "video")
    audio_emb = clip_embeddings(trained, [c.audio for c in a_clips], "audio")
    scale, bias = embedding_score_params(trained)
    return index_embeddings([c.id for c in v_clips], video_emb, [c.id for c in a_clips], audio_emb, kind,
                            scale, bias, model, **options)
