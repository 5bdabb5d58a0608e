"""How to match: one frozen :class:`MatchOptions`, one name per option from the command line to the
code (``avmatch match --max-offset`` is ``max_offset_s``, ``--greedy`` is ``greedy``). Its fields are
checked once, when it is made; :func:`avmatch.matching.match_corpora` and
:func:`avmatch.adapt.match_adapted` take it, ``Model.match`` and the command line fill it.
"""

from __future__ import annotations

from dataclasses import dataclass

from avmatch.errors import AvmatchError
from avmatch.matching.dense import check_min_confidence, check_normalisation

DENSE_MAX = 5000  # mode "auto": dense exact matching up to DENSE_MAX x DENSE_MAX pairs
MODES = ("auto", "dense", "two-stage")


@dataclass(frozen=True)
class MatchOptions:
    """The options of one matching; an unknown or out-of-range value is one line when it is made."""

    greedy: bool = False  # each video's best audio (which may repeat) instead of the one-to-one assignment
    normalise: str = "dual-softmax"  # dense.NORMALISATIONS: makes scores comparable before assigning
    max_offset_s: float | None = None  # timing models: seconds of lag searched either way (None: inference's default)
    min_confidence: float = 0.0  # a video whose pair is less sure than this stays unmatched (dense only)
    mode: str = "auto"  # MODES: "dense" scores every pair, "two-stage" each video's candidates only
    dense_max: int = DENSE_MAX  # mode "auto": dense up to dense_max x dense_max pairs, two-stage above
    candidates: int | None = None  # two-stage: audios retrieved per video (None: two_stage.DEFAULT_CANDIDATES)
    retrieval: str = "auto"  # two-stage: the FAISS index kind (index.KINDS; "auto": flat, ivfpq when large)
    shards: int = 0  # two-stage: the index cut into this many, searched as Dask tasks (0: one index here)
    cluster: str | None = None  # with shards: the Dask scheduler's address ("" or None: a local cluster)
    workers: int = 2  # with shards and no cluster address: the local cluster's processes
    shard_dir: str | None = None  # with shards: a folder the workers share, keeping the shards' answers until
    # the search is merged, so the same match resumes after a crash (None: a temporary folder)

    def __post_init__(self) -> None:
        check_normalisation(self.normalise)
        check_min_confidence(self.min_confidence)
        if self.mode not in MODES:
            raise AvmatchError(f"unknown matching mode {self.mode!r}; use one of: {', '.join(MODES)}")
        if self.retrieval != "auto":  # FAISS is read only when an index kind is named
            from avmatch.matching.index import resolve_kind

            resolve_kind(self.retrieval, 0)
        for name, given in (("--cluster", self.cluster is not None), ("--shard-dir", self.shard_dir is not None)):
            if given and not self.shards:
                raise AvmatchError(f"{name} is for the index's shards: give their number with --shards")

    def mode_for(self, n_videos: int, n_audios: int) -> str:
        """"dense" or "two-stage" for this many clips: as asked, or for "auto" dense up to
        ``dense_max`` squared pairs."""
        if self.mode != "auto":
            return self.mode
        return "dense" if n_videos * n_audios <= self.dense_max * self.dense_max else "two-stage"
