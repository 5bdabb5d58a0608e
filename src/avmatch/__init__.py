"""avmatch: find which audio belongs to which silent video.

The public API (what a notebook imports; the ``avmatch`` command is a thin layer over it)::

    import avmatch

    avmatch.extract(["training_clips/"], "feats")          # media -> a feature corpus
    model = avmatch.train("feats", "run", epochs=10)        # -> Model (its best checkpoint)
    model = avmatch.load("run")                             # or avmatch.load("default"): the shipped model
    result = model.match("silent_videos/", "audios/")       # media folders or feature corpora -> Result
    result.pairs, result.rows(), result.table(), result.to_csv("pairs.csv")
    avmatch.evaluate(result, "key.csv")                     # or a pairs.csv written before

Imports happen on first use, so ``import avmatch`` stays fast. Training's settings and recipes are in
``avmatch.training`` (``from avmatch.training import TrainConfig, RECIPES``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "Result", "evaluate", "extract", "load", "train"]

if TYPE_CHECKING:
    from avmatch.checkpoint import Trained
    from avmatch.corpus import Corpus
    from avmatch.features.job import ExtractSummary
    from avmatch.matching import MatchOptions
    from avmatch.matching.results import MatchResult as Result


def __getattr__(name: str) -> Any:
    if name == "Result":  # the matching's result: pairs, scores, offsets, rows(), table(), to_csv()
        from avmatch.matching.results import MatchResult

        return MatchResult
    raise AttributeError(f"module 'avmatch' has no attribute {name!r}")


def _source(value: object, name: str, corpus: bool = True) -> None:
    """``value`` names a folder or file (a non-empty str, or a Path) or, where ``corpus``, is a Corpus;
    else one line naming it."""
    from avmatch.corpus import Corpus
    from avmatch.errors import ArgumentTypeError

    kinds = (str, Path, Corpus) if corpus else (str, Path)
    if not isinstance(value, kinds) or (isinstance(value, str) and not value.strip()):
        raise ArgumentTypeError(f"{name} must be a folder or file (str or Path){' or a Corpus' if corpus else ''}, "
                                f"not {value!r:.60}")


def extract(sources: list[str | Path] | str | Path, out: str | Path, extractor: str = "default", *,
            options: dict | None = None, workers: int = 1, paired: bool = False,
            progress: bool = True, cluster: str | None = None) -> ExtractSummary:
    """Extract features of every media file under ``sources`` (files and folders) into the corpus
    folder ``out``; a rerun resumes. ``cluster``: a Dask scheduler's address ("" for a local one).
    Returns the summary (done, skipped, failed)."""
    from avmatch.features.job import extract as run

    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    return run(sources, out, extractor, options=options, workers=workers, paired=paired, progress=progress,
               cluster=cluster)


class Model:
    """A trained model (a run folder, a checkpoint or the shipped model), ready to match."""

    def __init__(self, trained: Trained, source: str | Path = "", metrics: dict | None = None):
        self.trained = trained
        self.source = str(source)
        self.metrics = metrics or {}  # training's final metrics, for a model avmatch.train returned

    @property
    def name(self) -> str:
        return self.trained.model.name

    def __repr__(self) -> str:
        return f"avmatch.Model({self.name!r}, from {self.source!r})"

    def features(self, source: Corpus | str | Path, options: dict | None = None, workers: int = 1,
                 progress: bool = True) -> Corpus:
        """A corpus as it is, or a feature corpus folder, or media (a file or folder) extracted with
        this model's extractor (cached; ``options`` name a network file the run's features came from)."""
        from avmatch.corpus import Corpus
        from avmatch.features.cache import is_media_source, open_features

        if isinstance(source, Corpus):
            return source
        extractor = self.trained.extractor
        if is_media_source(source):
            extractor = extractor.for_media(options, self.source or None)
        return open_features(source, extractor, workers, progress)

    def match(self, videos: Corpus | str | Path, audios: Corpus | str | Path, *,
              retriever: Model | str | Path | None = None, workers: int = 1, options: dict | None = None,
              adapt: int | None = None, progress: bool = False, match_options: MatchOptions | None = None,
              **matching) -> Result:
        """Match every video of ``videos`` to an audio of ``audios`` (one-to-one, or each video's best
        with ``greedy``); a timing model also gives each pair's offset. ``matching``: any field of
        :class:`avmatch.matching.MatchOptions`, the options of ``avmatch match`` (``greedy``,
        ``normalise``, ``max_offset_s``, ``min_confidence``, ``mode``, ``candidates``, ``retrieval``,
        ``shards``, ``cluster``, ...), over ``match_options`` where given. ``retriever``: a Model or a run
        for two-stage retrieval; ``workers``: extraction processes for media and (without
        ``match_options``) the local Dask cluster's for shards; ``options``: the extractor's;
        ``adapt`` rounds of adaptation to these clips (None: :data:`avmatch.adapt.ROUNDS`; 0: none;
        ``progress``: their bars)."""
        import dataclasses

        from avmatch.adapt import ROUNDS, match_adapted
        from avmatch.matching import MatchOptions

        _source(videos, "videos")
        _source(audios, "audios")
        known = [f.name for f in dataclasses.fields(MatchOptions)]
        unknown = sorted(set(matching) - set(known))
        if unknown:
            from avmatch.errors import ArgumentTypeError

            raise ArgumentTypeError(f"unknown matching option(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(known)}")
        match_options = dataclasses.replace(match_options or MatchOptions(workers=workers), **matching)
        if isinstance(videos, (str, Path)):
            from avmatch.features.cache import check_holds_videos

            check_holds_videos(videos, "VIDEOS", "avmatch match VIDEOS AUDIOS")
        if retriever is not None and not isinstance(retriever, Model):
            retriever = load(retriever)
        rounds = ROUNDS if adapt is None else adapt
        return match_adapted(self.trained, self.features(videos, options, workers),
                             self.features(audios, options, workers), match_options, rounds, progress,
                             retriever.trained if retriever else None)

    def locate(self, clips: Corpus | str | Path, recordings: Corpus | str | Path, *,
               min_confidence: float | None = None, reverse: bool = False, workers: int = 1,
               options: dict | None = None, progress: bool = False, camera: str | None | bool = None,
               adapt: int = 0) -> list:
        """Place each silent clip of ``clips`` inside the long audio recordings of ``recordings``
        (``reverse``: audio snippets inside long silent videos): a list of
        :class:`avmatch.matching.locate.Placement` (recording "" where refused), one per clip.
        Clips of one camera (their folder; ``camera``: a regular expression on the clip id; False:
        none) are not placed overlapping in time. ``adapt``: rounds of adaptation to these clips (0:
        none, the default: it places more takes but refuses fewer of scenes nobody recorded)."""
        from avmatch.adapt import locate_adapted
        from avmatch.matching.locate import MIN_CONFIDENCE

        _source(clips, "clips")
        _source(recordings, "recordings")
        silent = recordings if reverse else clips  # the side that must hold videos
        if isinstance(silent, (str, Path)):
            from avmatch.features.cache import check_holds_videos

            check_holds_videos(silent, *(("RECORDINGS", "avmatch locate SNIPPETS VIDEOS --reverse") if reverse
                                         else ("CLIPS", "avmatch locate CLIPS RECORDINGS")))
        if isinstance(camera, str):
            from avmatch.matching.locate import check_camera

            check_camera(camera)
        return locate_adapted(self.trained, self.features(clips, options, workers, progress),
                              self.features(recordings, options, workers, progress), adapt,
                              reverse, min_confidence=MIN_CONFIDENCE if min_confidence is None else min_confidence,
                              progress=progress, camera=camera)


def load(run: str | Path = "default", device: str | None = "auto") -> Model:
    """A trained model: a run folder (its best checkpoint), a ``.pt`` file, or "default" (the
    model shipped with avmatch). Every checkpoint is checked before it is built. ``device``: where it
    runs ("auto": CUDA where present, else the CPU; "cpu", "cuda", "cuda:N")."""
    from avmatch.checkpoint import load_trained
    from avmatch.shipped import model_path

    _source(run, "run", corpus=False)
    return Model(load_trained(model_path(run), device), run)


def train(corpus: Corpus | str | Path, run: str | Path, *, resume: bool = False, force: bool = False,
          progress: bool = True, device: str | None = "auto", recipe: str = "", fine_tune: dict | None = None,
          **config) -> Model:
    """Train on the paired clips of ``corpus`` (a Corpus or a corpus folder) into the run folder
    ``run`` and return the best model. ``config``: any field of :class:`avmatch.training.TrainConfig`
    (model, epochs, batch_size, lr, window_s, init, model_options, ...) over the model's recipe, or
    over the named ``recipe`` ("report"; ``avmatch.training.RECIPES``); by default the model that suits
    the corpus: the shipped model fine-tuned where it fits the corpus's features, else a new model
    (``init="none"``: a new model in any case). ``fine_tune``: the settings over the started model's
    recipe when fine-tuning (None: ``avmatch.training.FINE_TUNE``; the demo's: ``DEMO_FINE_TUNE``).
    ``device`` as for :func:`load`."""
    import dataclasses

    from avmatch.errors import ArgumentTypeError
    from avmatch.features.cache import training_features
    from avmatch.training import FINE_TUNE, TrainConfig, check_resume_settings, resolve
    from avmatch.training import train as run_training

    _source(corpus, "corpus")
    _source(run, "run", corpus=False)
    unknown = sorted(set(config) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ArgumentTypeError(f"unknown training option(s) {', '.join(unknown)}; known: "
                                f"{', '.join(f.name for f in dataclasses.fields(TrainConfig))}")
    corpus = corpus if not isinstance(corpus, (str, Path)) else training_features(corpus)
    if resume:
        check_resume_settings(run, config)
    settings = resolve(corpus, recipe, fine_tune=FINE_TUNE if fine_tune is None else fine_tune, **config)
    metrics = run_training(corpus, run, settings, resume=resume, progress=progress, force=force, device=device)
    model = load(run, device)
    model.metrics = metrics
    return model


def evaluate(result: Result | str | Path, key: str | Path | dict[str, str]) -> dict:
    """Metrics of a matching against the true key: one-to-one accuracy, top-k, MRR and (when the key
    has offsets) the offset error. ``result``: a Result or a pairs.csv written by a match; ``key``: a
    CSV file (columns video,audio[,offset_s]) or a {video: audio} dict. A Result is judged in memory,
    as its written set would be."""
    from avmatch.metrics import evaluate_pairs, evaluate_result

    if isinstance(result, (str, Path)):
        return evaluate_pairs(result, key)
    return evaluate_result(result, key)

