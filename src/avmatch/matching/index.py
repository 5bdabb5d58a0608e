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

KINDS = ("flat", "ivf", "hnsw")
METRICS = ("ip", "l2")  # inner product of normalised embeddings (cosine), or Euclidean distance
MAX_DIM = 1 << 16
FORMAT = "avmatch-index"
SEARCH_ROWS = 16384  # queries per faiss call: bounds the (rows, k) result buffers


def default_nlist(n: int) -> int:
    """IVF cells: about 4 sqrt(N), but at least 39 training points per cell (faiss's minimum)."""
    return int(max(1, min(4 * np.sqrt(n), n // 39)))


def build_index(emb: np.ndarray, kind: str = "flat", *, metric: str = "ip", nlist: int | None = None,
                nprobe: int | None = None, hnsw_m: int = 32, ef_search: int = 128, seed: int = 0) -> faiss.Index:
    """A FAISS index over (N, E) embeddings, rows added in order: by inner product of normalised
    embeddings (``metric`` "ip", the cosine) or by Euclidean distance ("l2", for a model that scores
    by distance: ranking it by inner product would rank by something else than its score).

    "flat": exact. "ivf": ``nlist`` k-means cells (default :func:`default_nlist`), ``nprobe`` of them
    searched per query (default :data:`DEFAULT_NPROBE`; :func:`tune_search` sets it for a recall
    target once the queries are known). "hnsw": a graph with ``hnsw_m`` links per node, searched
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
    elif kind == "ivf":
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
        index = faiss.IndexIVFFlat(flat(dim), dim, nlist, faiss_metric)
        index.cp.seed = seed
        rng = np.random.default_rng(seed)
        train = emb if n <= 256 * nlist else emb[np.sort(rng.choice(n, 256 * nlist, replace=False))]
        index.train(train)
        index.nprobe = nprobe
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


def tune_search(index: faiss.Index, queries: np.ndarray, k: int = 10, target: float = RECALL_TARGET,
                sample: int = 500, seed: int = 0) -> dict[str, float]:
    """Set an IVF index's ``nprobe`` (an HNSW index's ``efSearch``) to the smallest power of two at which
    the exact best row of at least ``target`` of a sample of ``queries`` is among the approximate top
    ``k`` (1-recall@k: what two-stage matching needs, the partner among the candidates), so the
    search costs what the recall needs and no more. Returns {"nprobe" | "ef_search": value,
    "best_in_top{k}": r, "queries": n}; a flat index (exact) is left alone."""
    ivf = faiss.try_extract_index_ivf(index)
    hnsw = isinstance(index, faiss.IndexHNSW)
    if ivf is None and not hnsw:
        return {}
    k = max(1, min(k, index.ntotal))
    rng = np.random.default_rng(seed)
    q = np.ascontiguousarray(queries[np.sort(rng.choice(len(queries), min(sample, len(queries)), replace=False))],
                             dtype=np.float32)
    if ivf is not None:  # every cell searched: an IVF-Flat index's exact answer, with no second copy of the rows
        ivf.nprobe = ivf.nlist
        name, top, set_to = "nprobe", ivf.nlist, lambda v: setattr(ivf, "nprobe", v)
    else:
        index.hnsw.efSearch = max(1024, k)
        name, top, set_to = "ef_search", 1 << 12, lambda v: setattr(index.hnsw, "efSearch", v)
    _, exact = search(index, q, 1)
    value, recall = 1, 0.0
    while True:
        set_to(min(value, top))
        _, found = search(index, q, k)
        recall = float((found == exact).any(axis=1).mean())
        if recall >= target or value >= top:
            break
        value *= 2
    return {name: int(min(value, top)), f"best_in_top{k}": recall, "queries": int(len(q))}


def index_params(index: faiss.Index) -> dict:
    """The search parameters of an index, as plain values (what ``index.json`` records)."""
    metric = "l2" if index.metric_type == faiss.METRIC_L2 else "ip"
    if isinstance(index, faiss.IndexIVF):
        return {"kind": "ivf", "metric": metric, "nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    if isinstance(index, faiss.IndexHNSW):
        return {"kind": "hnsw", "metric": metric, "hnsw_m": int(index.hnsw.nb_neighbors(1)),
                "ef_search": int(index.hnsw.efSearch)}
    return {"kind": "flat", "metric": metric}


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
    _, exact = search(build_index(base, "flat", metric=index_params(index)["metric"]), q, k)
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
        other_ids, other = (self.video_ids, self.video) if audio else (self.audio_ids, self.audio)
        return self._ranked(other, other_ids, self._query_vectors(query_ids, audio), k)

    def similar(self, query_ids: list[str], k: int = 5, audio: bool = False) -> list[list[tuple[str, float]]]:
        """For each query clip id the ``k`` clips of its *own* modality most like it (videos for a
        video, audios for an audio with ``audio=True``), itself left out: the cosine of their
        embeddings (minus their distance for a distance model), not a video-audio score."""
        ids, index = (self.audio_ids, self.audio) if audio else (self.video_ids, self.video)
        sims, rows = search(index, self._query_vectors(query_ids, audio), k + 1)
        if self.metric == "l2":
            sims = -np.sqrt(np.maximum(sims.astype(np.float64), 0.0) + 1e-8)
        return [[(ids[j], float(sc)) for sc, j in zip(srow, jrow, strict=True) if j >= 0 and ids[j] != q][:k]
                for q, srow, jrow in zip(query_ids, sims, rows, strict=True)]

    def _query_vectors(self, query_ids: list[str], audio: bool) -> np.ndarray:
        """The stored embeddings of the query clips (audio ones with ``audio``); an unknown id is one line."""
        ids, index = (self.audio_ids, self.audio) if audio else (self.video_ids, self.video)
        row = {c: i for i, c in enumerate(ids)}
        missing = [q for q in query_ids if q not in row]
        if missing:
            raise AvmatchError(f"no {'audio' if audio else 'video'} clip {missing[0]!r} in the index"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return vectors(index, np.array([row[q] for q in query_ids]))

    def search_vectors(self, queries: np.ndarray, k: int = 5, audio: bool = False) -> list[list[tuple[str, float]]]:
        """The ``k`` best clips for (Q, E) query embeddings: audios for video embeddings, or videos
        for audio embeddings with ``audio=True`` (the queries' modality)."""
        return self._ranked(self.video, self.video_ids, queries, k) if audio else \
            self._ranked(self.audio, self.audio_ids, queries, k)

    @property
    def metric(self) -> str:
        return index_params(self.audio)["metric"]

    def _ranked(self, index: faiss.Index, ids: list[str], queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        sims, rows = search(index, queries, k)
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
        names = ("index.json", "video.faiss", "audio.faiss")
        for name in names:
            remove_stale_temps(path / name)
        (path / "index.json").unlink(missing_ok=True)  # an index being overwritten is incomplete until the end
        digests = {}
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


def _check_faiss_file(file: Path, n: int, dim: int, kind: str) -> None:
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
    if size < n * dim * 4:
        raise AvmatchError(f"{size} bytes cannot hold {n} vectors of {dim} dims: truncated or forged", file)
    expected = {"flat": tuple(_FLAT), "ivf": (b"IwFl",), "hnsw": (b"IHNf", b"IHNs")}[kind]
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
        return "malformed index.json: params do not name a kind (flat, ivf, hnsw) and metric (ip, l2)"
    for key in ("nprobe", "ef_search"):
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
        _check_faiss_file(file, len(meta[f"{name}_ids"]), meta["dim"], params["kind"])
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
        if "nprobe" in params and isinstance(index, faiss.IndexIVF):
            index.nprobe = min(params["nprobe"], index.nlist)
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
    if not {"nprobe", "ef_search"} & set(options):  # the search depth the recall target needs, each way
        tune_search(audio, video_emb, recall_k)
        tune_search(video, audio_emb, recall_k)
    recall = {}
    if kind != "flat":
        recall = {"video->audio": measure_recall(audio, audio_emb, video_emb, recall_k),
                  "audio->video": measure_recall(video, video_emb, audio_emb, recall_k)}
    return EmbeddingIndex(list(video_ids), list(audio_ids), video, audio, scale, bias, recall, model)


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
