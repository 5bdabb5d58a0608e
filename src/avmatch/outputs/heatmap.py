"""The heat map of a score matrix (``pairs.heatmap.png`` beside pairs.csv; ``evaluate --heatmap`` and the
reports draw it with the true audio on the diagonal)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avmatch.atomic import atomic_path


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
