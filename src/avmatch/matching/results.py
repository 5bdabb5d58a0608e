"""A matching's result and its files: pairs.csv, the score matrix beside it (``.scores.npz``, with
the run id and the SHA-256 of its set) and the heat map; readers that refuse a set mixed from two runs."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, issparse

from avmatch.atomic import atomic_path, file_sha256, regular, remove_stale_temps, write_text
from avmatch.errors import AvmatchError
from avmatch.matching.dense import margins
from avmatch.matching.two_stage import margins_sparse, sparse_lookup
from avmatch.progress import stage


def csv_cell(value) -> str:
    """A value as the CSV files write it: floats to 6 significant digits, a value not measured (NaN)
    as an empty cell (which spreadsheets and avmatch's readers take as "none"), anything else as is."""
    if isinstance(value, float):
        return "" if value != value else f"{value:.6g}"
    return value


@dataclass
class MatchResult:
    video_ids: list[str]
    audio_ids: list[str]
    scores: np.ndarray | csr_matrix  # (Nv, Na) the matrix the assignment used (normalised);
    chosen: np.ndarray  # (Nv,) audio index per video, -1 = unmatched     # sparse: two-stage candidates
    method: str
    raw_scores: np.ndarray | csr_matrix | None = None  # (Nv, Na) the model's own scores
    offset_s: np.ndarray | None = None  # (Nv,) for timing models
    offset_conf: np.ndarray | None = None
    confidence: np.ndarray | None = None  # (Nv,) dense matching: dense.assignment_confidence
    drift_ppm: np.ndarray | None = None  # (Nv,) clock drift of long pairs (NaN: too short to measure)
    probability: np.ndarray | None = None  # (Nv,) a pair classifier's own sigmoid of its logit for the pair
    sources: dict = field(default_factory=dict)  # {"video" | "audio": {clip id: media file}} where known
    normalisation: str = "dual-softmax"  # what made ``scores`` from the raw scores ("none": they are the raw)
    adapted: list[int] = field(default_factory=list)  # sure pairs of each round of adaptation at match time

    @property
    def sparse(self) -> bool:
        return issparse(self.scores)

    def unmatched_audios(self) -> list[str]:
        """Audio ids no video was given."""
        used = np.zeros(len(self.audio_ids), dtype=bool)
        used[self.chosen[self.chosen >= 0]] = True
        return [self.audio_ids[j] for j in np.flatnonzero(~used)]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(video, audio) per video; audio "" where the video stayed unmatched."""
        return [(v, self.audio_ids[j] if j >= 0 else "") for v, j in zip(self.video_ids, self.chosen, strict=True)]

    def table(self) -> dict[str, np.ndarray]:
        """The rows as columns (``pandas.DataFrame(result.table())`` makes a data frame of them)."""
        rows = self.rows()
        columns = list(rows[0]) if rows else ["video", "audio", "score", "margin"]
        return {c: np.array([r[c] for r in rows]) for c in columns}

    def to_csv(self, pairs_csv: str | Path, heatmap: bool = True) -> list[Path]:
        """:meth:`write`: pairs.csv with its score file (and heat map) as one set; the paths written."""
        return self.write(pairs_csv, heatmap)

    def rows(self) -> list[dict]:
        """One dict per video: video, audio ("" unmatched), score, margin (and probability for a
        pair classifier, confidence for dense matching, offset_s, offset_conf for a timing model,
        drift_ppm when some pair was long enough to measure it)."""
        if self.sparse:
            m = margins_sparse(self.scores, self.chosen)
            chosen_scores = sparse_lookup(self.scores, np.arange(len(self.chosen)), self.chosen)
        else:
            m = margins(self.scores, self.chosen)
            chosen_scores = np.array([self.scores[i, j] if j >= 0 else np.nan for i, j in enumerate(self.chosen)])
        rows = []
        for i, (vid, j) in enumerate(zip(self.video_ids, self.chosen, strict=True)):
            row = {"video": vid, "audio": self.audio_ids[j] if j >= 0 else "",
                   "score": float(chosen_scores[i]), "margin": float(m[i])}
            if self.probability is not None:
                row["probability"] = float(self.probability[i])
            if self.confidence is not None:
                row["confidence"] = float(self.confidence[i])
            if self.offset_s is not None:
                row["offset_s"] = float(self.offset_s[i])
                row["offset_conf"] = float(self.offset_conf[i])
            if self.drift_ppm is not None:
                row["drift_ppm"] = float(self.drift_ppm[i])
            rows.append(row)
        return rows

    def csv_text(self) -> str:
        """pairs.csv as text: one row per video, sorted by video id (two runs on the same inputs
        write the same file, whatever order the inputs were read in)."""
        buf = io.StringIO()
        rows = sorted(self.rows(), key=lambda r: r["video"])
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["video", "audio", "score", "margin"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: csv_cell(v) for k, v in r.items()})
        return buf.getvalue()

    def write(self, pairs_csv: str | Path, heatmap: bool = True) -> list[Path]:
        """Write pairs.csv, the score matrix beside it (``.scores.npz``) and a heat map PNG, as one set.

        A two-stage (sparse) result stores its candidate scores in CSR form (``data``, ``indices``,
        ``indptr``, ``shape``; read back with :func:`load_scores`) and has no heat map.

        The set is one unit: the previous run's files go first, then the heat map, the score matrix
        (which records a run id and the SHA-256 of the pairs.csv and heat map of its set) and last
        pairs.csv. A kill or a full disk midway leaves an incomplete set that readers refuse
        (:func:`check_same_run`), never pairs of one run beside scores of another."""
        with stage("write results"):
            return self._write(Path(pairs_csv), heatmap)

    def _write(self, pairs_csv: Path, heatmap: bool) -> list[Path]:
        text = self.csv_text()
        npz, png = scores_path(pairs_csv), heatmap_path(pairs_csv)
        for path in (pairs_csv, npz, png):
            remove_stale_temps(path)
            path.unlink(missing_ok=True)
        written = [pairs_csv, npz]
        png_digest = ""
        if heatmap and not self.sparse:
            heatmap_png(self.scores, png, self.video_ids, self.audio_ids, self.chosen,
                        probability=self.normalisation == "dual-softmax")
            png_digest = file_sha256(png)
            written.append(png)
        ids = {"video_ids": np.array(self.video_ids), "audio_ids": np.array(self.audio_ids),
               "run_id": np.array(uuid.uuid4().hex), "method": np.array(self.method),
               "pairs_sha256": np.array(hashlib.sha256(text.encode()).hexdigest()),
               "heatmap_sha256": np.array(png_digest), "normalisation": np.array(self.normalisation)}
        with atomic_path(npz) as tmp:
            raw = self.scores if self.raw_scores is None else self.raw_scores
            if self.sparse:
                raw = raw.tocsr()
                np.savez(tmp, data=self.scores.data, indices=self.scores.indices, indptr=self.scores.indptr,
                         shape=np.array(self.scores.shape), raw_data=raw.data, **ids)
            else:
                np.savez(tmp, scores=self.scores, raw_scores=raw, **ids)
        write_text(pairs_csv, text)  # last: with it the set is complete
        return written



def heatmap_layout(video_ids: list[str], audio_ids: list[str], chosen: np.ndarray | None,
                   truth: np.ndarray | None = None) -> tuple[list[int], list[int]]:
    """The heat map's row and column order: videos by id; the k-th column is the k-th video's true
    audio when ``truth`` is known (so a wrong choice stands off the diagonal), else its chosen audio
    (so the choices form it); then the other audios, by id."""
    diagonal = truth if truth is not None else chosen
    rows = sorted(range(len(video_ids)), key=lambda i: video_ids[i])
    cols = list(dict.fromkeys(int(diagonal[i]) for i in rows if diagonal is not None and diagonal[i] >= 0))
    cols += sorted(set(range(len(audio_ids))) - set(cols), key=lambda j: audio_ids[j])
    return rows, cols


def heatmap_png(scores: np.ndarray, path: str | Path, video_ids: list[str] | None = None,
                audio_ids: list[str] | None = None, chosen: np.ndarray | None = None,
                truth: np.ndarray | None = None, probability: bool = True, places: dict | None = None) -> Path:
    """A heat map of the score matrix, laid out so that it answers the question: videos by id (named
    on the axes up to 40), and in each row the video's *true* audio on the diagonal when ``truth``
    (audio index per video, -1 unknown) is given, else its chosen audio. With the truth, each choice
    is marked: a white circle when right, a red cross when wrong (off the diagonal, where the model
    put it); without, a red circle. ``probability``: the scores are the dual softmax's
    log-probabilities, shown as the pair's probability (0 to 1); else the model's own scores.
    ``places``, a dict, is filled with where each video's pair is in the picture (so a report can point
    at it): video id -> (left, top, width, height) as shares of the image's width and height, of the
    cell of its chosen audio, or of its whole row when it has none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_v, n_a = scores.shape
    video_ids = video_ids if video_ids is not None else [str(i) for i in range(n_v)]
    audio_ids = audio_ids if audio_ids is not None else [str(j) for j in range(n_a)]
    rows, cols = heatmap_layout(video_ids, audio_ids, chosen, truth)
    shown = scores[np.ix_(rows, cols)]
    if probability:
        shown = np.exp(np.minimum(shown, 0.0))
    size = min(12.0, max(6.0, 3.0 + 0.12 * max(n_v, n_a)))  # room for the titles of a small set
    fig, ax = plt.subplots(figsize=(size, size * n_v / max(n_a, 1) + 0.8))
    im = ax.imshow(shown, cmap="viridis", aspect="auto", interpolation="nearest",
                   **({"vmin": 0.0, "vmax": 1.0} if probability else {}))
    at = {j: k for k, j in enumerate(cols)}  # audio index -> its column in the picture
    if chosen is not None:
        picked = [(y, at[int(chosen[i])], i) for y, i in enumerate(rows) if chosen[i] >= 0]
        mark = max(2, 200 / max(n_v, 1))
        if truth is None:
            ax.scatter([x for _, x, _ in picked], [y for y, _, _ in picked], s=mark, facecolors="none",
                       edgecolors="red", linewidths=0.8, label="chosen")
        else:
            for good, style in ((True, {"facecolors": "none", "edgecolors": "white", "marker": "o", "label": "chosen, right"}),
                                (False, {"c": "red", "marker": "x", "label": "chosen, wrong"})):
                pts = [(y, x) for y, x, i in picked if (chosen[i] == truth[i]) == good]
                if pts:
                    ax.scatter([x for _, x in pts], [y for y, _ in pts], s=mark * (1 if good else 2), linewidths=1.2,
                               **style)
        ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    if n_v <= 40:
        ax.set_yticks(range(n_v), [video_ids[i] for i in rows], fontsize=6)
    if n_a <= 40:
        ax.set_xticks(range(n_a), [audio_ids[j] for j in cols], fontsize=6, rotation=90)
    ax.set_xlabel("audio (each video's true audio on the diagonal)" if truth is not None
                  else "audio (each video's chosen audio on the diagonal)")
    ax.set_ylabel("video (by name)")
    ax.set_title("avmatch: how sure each video-audio pair is" if probability else "avmatch: the model's scores")
    fig.colorbar(im, ax=ax, fraction=0.046, label="probability of the pair\n(softmax over its row x its column)"
                 if probability else "the model's own score\n(higher: more alike)")
    fig.tight_layout()
    if places is not None:  # data coordinates (cells centred on whole numbers) -> shares of the figure
        share = ax.transData + fig.transFigure.inverted()
        for y, i in enumerate(rows):
            x = at[int(chosen[i])] if chosen is not None and chosen[i] >= 0 else None
            corners = share.transform([(-0.5 if x is None else x - 0.5, y - 0.5),
                                       (n_a - 0.5 if x is None else x + 0.5, y + 0.5)])
            (left, bottom), (right, top) = corners.min(axis=0), corners.max(axis=0)
            places[video_ids[i]] = (float(left), float(1.0 - top), float(right - left), float(top - bottom))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)



def scores_path(pairs_csv: str | Path) -> Path:
    return Path(pairs_csv).with_suffix(".scores.npz")


def heatmap_path(pairs_csv: str | Path) -> Path:
    return Path(pairs_csv).with_suffix(".heatmap.png")


def _npz_text(z, key: str) -> str:
    if key not in z.files:
        return ""
    value = z[key]
    return str(value) if value.ndim == 0 and value.dtype.kind == "U" else ""


def check_same_run(pairs_csv: str | Path, npz_path: str | Path) -> dict:
    """The run id and method recorded in a score matrix, once it is known to belong to the same
    ``avmatch match`` run as ``pairs_csv`` (its recorded SHA-256 is that file's): else one line."""
    npz_path = regular(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            recorded = {k: _npz_text(z, k) for k in ("run_id", "method", "pairs_sha256")}
    except Exception as err:  # noqa: BLE001 - zip, key and pickle errors read the same to a user
        raise AvmatchError(f"not a score matrix written by avmatch match ({_why(err)})", npz_path) from None
    if not recorded["pairs_sha256"]:
        raise AvmatchError(f"records no run id, so nothing ties it to {Path(pairs_csv).name} (written by an "
                           "older avmatch?); rerun avmatch match, or remove it to evaluate the pairs alone", npz_path)
    if file_sha256(pairs_csv) != recorded["pairs_sha256"]:
        raise AvmatchError(f"{Path(pairs_csv).name} is not the pairs file of this score matrix (from another run, "
                           "a match stopped midway, or edited since); rerun avmatch match, or remove the score "
                           "matrix to evaluate the pairs alone", npz_path)
    return recorded


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}{': ' + text[0][:120] if text else ''}"


def load_scores(npz_path: str | Path, raw: bool = False) -> tuple[np.ndarray | csr_matrix, list[str], list[str]]:
    """The score matrix written beside a pairs.csv (dense, or sparse candidates) and its ids: the
    normalised scores the assignment used, or with ``raw`` the model's own.
    Never unpickles; a damaged or foreign file is a one-line error."""
    npz_path = regular(npz_path)
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            if "indptr" in z:
                scores = csr_matrix((z["raw_data" if raw else "data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
            else:
                scores = np.asarray(z["raw_scores" if raw else "scores"], dtype=np.float64)
            video_ids, audio_ids = [str(v) for v in z["video_ids"]], [str(a) for a in z["audio_ids"]]
    except Exception as err:  # noqa: BLE001 - zip, key, pickle and shape errors read the same to a user
        raise AvmatchError(f"not a score matrix written by avmatch match ({_why(err)})", npz_path) from None
    if scores.ndim != 2 or scores.shape != (len(video_ids), len(audio_ids)):
        raise AvmatchError(f"score matrix of shape {scores.shape} does not fit its {len(video_ids)} video and "
                           f"{len(audio_ids)} audio ids", npz_path)
    return scores, video_ids, audio_ids

