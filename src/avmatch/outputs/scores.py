"""A match's set of files: the pairs (pairs.csv, or another format's file), the score matrix beside it
(``.scores.npz``, with the run id and the SHA-256 of its set) and the heat map, written as one unit;
readers of the score matrix that refuse a set mixed from two runs."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, issparse

from avmatch.atomic import atomic_path, file_sha256, regular, remove_stale_temps, write_text
from avmatch.errors import AvmatchError
from avmatch.outputs.heatmap import heatmap_png
from avmatch.outputs.writers import get_writer, match_table
from avmatch.progress import stage


def write_match(result, path: str | Path, heatmap: bool = True, format: str = "csv") -> list[Path]:
    """Write a :class:`avmatch.matching.MatchResult`'s pairs (``pairs.csv``; ``format``: one of
    :data:`avmatch.outputs.FORMATS`), the score matrix beside them (``.scores.npz``) and a heat map
    PNG, as one set; the paths written.

    A two-stage (sparse) result stores its candidate scores in CSR form (``data``, ``indices``,
    ``indptr``, ``shape``; read back with :func:`load_scores`) and has no heat map.

    The set is one unit: the previous run's files go first, then the heat map, the score matrix
    (which records a run id and the SHA-256 of the pairs file and heat map of its set) and last
    the pairs. A kill or a full disk midway leaves an incomplete set that readers refuse
    (:func:`check_same_run`), never pairs of one run beside scores of another."""
    with stage("write results"):
        return _write_match(result, Path(path), heatmap, get_writer(format).text(match_table(result)))


def _write_match(result, pairs_file: Path, heatmap: bool, text: str) -> list[Path]:
    sparse = issparse(result.scores)
    npz, png = scores_path(pairs_file), heatmap_path(pairs_file)
    for path in (pairs_file, npz, png):
        remove_stale_temps(path)
        path.unlink(missing_ok=True)
    written = [pairs_file, npz]
    png_digest = ""
    if heatmap and not sparse:
        heatmap_png(result.scores, png, result.video_ids, result.audio_ids, result.chosen,
                    probability=result.normalisation == "dual-softmax")
        png_digest = file_sha256(png)
        written.append(png)
    ids = {"video_ids": np.array(result.video_ids), "audio_ids": np.array(result.audio_ids),
           "run_id": np.array(uuid.uuid4().hex), "method": np.array(result.method),
           "pairs_sha256": np.array(hashlib.sha256(text.encode()).hexdigest()),
           "heatmap_sha256": np.array(png_digest), "normalisation": np.array(result.normalisation)}
    scores = result.scores
    with atomic_path(npz) as tmp:
        raw = scores if result.raw_scores is None else result.raw_scores
        if sparse:
            raw = raw.tocsr()
            np.savez(tmp, data=scores.data, indices=scores.indices, indptr=scores.indptr,
                     shape=np.array(scores.shape), raw_data=raw.data, **ids)
        else:
            np.savez(tmp, scores=scores, raw_scores=raw, **ids)
    write_text(pairs_file, text)  # last: with it the set is complete
    return written


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

