"""Recipes as data: one table of settings that suit a model better than TrainConfig's general defaults,
each naming its model, and the one resolver (:func:`resolve`) that turns what a user asked for into a
TrainConfig (the CLI through the public API, the public API and the demo)."""

from __future__ import annotations

from avmatch.checkpoint import load_trained
from avmatch.corpus import Corpus
from avmatch.errors import AvmatchError
from avmatch.features.record import ExtractorRecord
from avmatch.inference import check_fits
from avmatch.shipped import model_path
from avmatch.training.config import TrainConfig

# the university report's training of its lstm-cnn, exactly where it says and plainly where it does not:
# a ReLU after each residual sum, BCE on one mismatched pair per matched pair, plain Adam at a constant rate
_REPORT_TRAINING = {"optimizer": "adam", "schedule": "constant", "lr": 1e-3, "negatives": 1}
# Settings that suit a model better than TrainConfig's general defaults, each naming its model: a
# model's own recipe (under the model's name) applies whenever that model is trained (the CLI, the API,
# the demo and the shipped model's build); a named one ("report") is asked for by name. What a caller gives wins.
RECIPES: dict[str, dict] = {
    # the report's model and training (``--recipe report``; README "The report's recipe"): the two
    # sequences concatenated, diagnostics every 10 steps (every step cost twice the training on 120 s clips)
    "report": {"model": "lstm-cnn", **_REPORT_TRAINING, "histogram_steps": 10,
               "model_options": {"interleave": False, "residual_relu": True}},
    # lstm-cnn trains the report's way, its two sequences interleaved: top-5 of 30 0.978 vs 0.911 with
    # AdamW + cosine at 2e-3 and three mismatched pairs (benchmarks/compare_models.py, README)
    "lstm-cnn": {"model": "lstm-cnn", **_REPORT_TRAINING, "model_options": {"residual_relu": True}},
    # the shipped model's recipe, measured by benchmarks/generalise.py: level-free audio, 3 s windows
    # with the audio shifted by up to 1 s, offsets searched within 32 frames (1.28 s at 25 Hz)
    "sync": {"model": "sync", "epochs": 16, "batch_size": 48, "window_s": 3.0, "max_shift_s": 1.0,
             "model_options": {"max_lag": 32, "hidden": 128, "embed_dim": 64, "init_scale": 50.0, "audio_centre": 25}},
    # one row a second that carries the second's timing inside it (the classic extractor): the sync model
    # comparing the rows second by second, each row on its own (kernel 1), less each clip's look and
    # level (both towers centred over 25 s); aligned clips only (no lag: a second is too coarse for one).
    # Four families never trained on, every audio format: one-to-one 1.000 where dual gets 0.017 and
    # lstm-cnn 0.033 (benchmarks/compare_models.py --media; README "Models")
    "seconds": {"model": "sync", "epochs": 20, "batch_size": 48, "window_s": 12.0,
                "model_options": {"max_lag": 0, "kernel": 1, "hidden": 128, "embed_dim": 64, "init_scale": 50.0,
                                  "audio_centre": 25, "video_centre": 25}},
}
# Fine-tuning (``init``): the started model's recipe, then these (benchmarks/generalise.py's fine-tuned arm)
FINE_TUNE = {"lr": 1e-3, "epochs": 8, "patience": 8}
# The demo's fine-tune of the shipped model: its best validation came at epoch 3-4 of FINE_TUNE's 8
DEMO_FINE_TUNE = {**FINE_TUNE, "epochs": 4}
# Matching that fine-tunes on its own sure pairs (avmatch.adapt): epochs a round, all of them run
ADAPT_FINE_TUNE = {**FINE_TUNE, "epochs": 4, "patience": 4}
# `avmatch compare`: every model trains this many epochs, over its own recipe, unless --epochs says otherwise
COMPARE = {"epochs": 20}


def named_recipes() -> dict[str, dict]:
    """The recipes asked for by name (``--recipe NAME``), not a model's own: "report", "seconds"."""
    return {name: r for name, r in RECIPES.items() if r["model"] != name}


def recipe(name: str, fine_tune: dict = FINE_TUNE, **given) -> TrainConfig:
    """The TrainConfig of a recipe: TrainConfig's defaults, then ``RECIPES[name]`` (a model's own
    recipe is under the model's name; a named one such as "report" names its model), then ``given``
    (its ``model_options`` merged over the recipe's). Fine-tuning (``init`` given, no name): the
    started model's recipe with ``fine_tune`` (:data:`FINE_TUNE`) over it."""
    base = dict(RECIPES.get(name, {}))
    model = base.pop("model", name)
    if given.get("init") and not model:
        model = load_trained(model_path(given["init"])).model.name
        base = {**RECIPES.get(model, {}), **fine_tune}
        base.pop("model", None)
    options = {**base.pop("model_options", {}), **(given.pop("model_options", None) or {})}
    return TrainConfig(model=model, **{**base, **given}, model_options=options)


def choose_model(corpus: Corpus) -> str:
    """The model (or recipe) that suits a corpus when the user names none: the one its extractor names
    (:attr:`avmatch.features.record.ExtractorRecord.recipe`), else the timing-aware one for frame-rate features
    (several rows a second, both modalities at one rate), else the embedding model."""
    suited = ExtractorRecord.from_dict(corpus.extractor).recipe
    if suited:
        return suited
    if corpus.video_rate_hz == corpus.audio_rate_hz and corpus.video_rate_hz >= 5:
        return "sync"
    return "dual"


def choose_start(corpus: Corpus, model: str = "", init: str = "", recipe: str = "") -> tuple[str, str]:
    """The (model, init) to train: what the user named, else the shipped model fine-tuned where it
    fits the corpus (its extractor, dims and rates), else :func:`choose_model`'s from scratch.
    ``init="none"`` asks for scratch."""
    if init == "none":
        return model or ("" if recipe else choose_model(corpus)), ""
    if model or init or recipe:
        return model, init
    return ("", "default") if _shipped_fits(corpus) else (choose_model(corpus), "")


def _shipped_fits(corpus: Corpus) -> bool:
    try:
        shipped = load_trained(model_path("default"))
        for modality in ("video", "audio"):
            check_fits(shipped, corpus, modality)
    except AvmatchError:  # no shipped model, or features it was not trained on
        return False
    return True



def resolve(corpus: Corpus, named: str = "", model: str = "", init: str = "", fine_tune: dict = FINE_TUNE,
            **given) -> TrainConfig:
    """The TrainConfig to train on ``corpus``, the one way the public API (and so the CLI) and the demo
    turn what was asked into settings: the start :func:`choose_start` picks (the model and ``init``
    given, else the shipped model fine-tuned where it fits, else a new model that suits the corpus),
    the ``named`` recipe checked against it, then :func:`recipe` with ``given`` over it."""
    model, init = choose_start(corpus, model, init, named)
    if named:
        recipes = named_recipes()
        if named not in recipes:
            raise AvmatchError(f"unknown recipe {named!r}; one of: {', '.join(sorted(recipes))}")
        if model and model != recipes[named]["model"]:
            raise AvmatchError(f"recipe {named!r} trains {recipes[named]['model']!r}, not {model!r}")
        if init:
            raise AvmatchError("a recipe trains a new model; init fine-tunes one: give one of them")
    return recipe(named or model, fine_tune, init=init, **given)
