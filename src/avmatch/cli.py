"""Command line: argument parsing only; each subcommand calls one library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from avmatch.errors import AvmatchError
from avmatch.options import parse_options

if TYPE_CHECKING:
    from avmatch.matching import MatchOptions


def note(text: str) -> None:
    """A remark for the person at the terminal (not a result, not an error): silent under -q."""
    from avmatch.progress import quiet

    if not quiet():
        print(f"avmatch: {text}", file=sys.stderr)


def _options(pairs: list[str]) -> dict:
    """``--option hidden=64 --option cell=gru`` -> {"hidden": 64, "cell": "gru"}."""
    return parse_options(pairs, "--option wants KEY=VALUE")


def _at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is less than {least}")
    return value


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (clips, workers, candidates, cells ...)."""
    return _at_least(text, 1)


def index_kind(text: str) -> str:
    """An argparse type: an index kind (the FAISS module is read only when the option is given)."""
    from avmatch.matching.index import resolve_kind

    try:
        resolve_kind(text, 0)
    except AvmatchError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def whole(text: str) -> int:
    """An argparse type: a whole number of at least 0 (0: none)."""
    return _at_least(text, 0)


def share(text: str) -> float:
    """An argparse type: a number from 0 to 1 (a confidence)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g} is not from 0 to 1")
    return value


# command-line option -> TrainConfig field; an option not given keeps TrainConfig's default (its one source)
_TRAIN_OPTIONS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "clip_grad": "clip_grad",
                  "window": "window_s", "val_fraction": "val_fraction", "patience": "patience", "seed": "seed"}


def _train_settings(args) -> dict:
    """The training settings given on the command line (TrainConfig fields), over any recipe's."""
    given = {field: getattr(args, opt) for opt, field in _TRAIN_OPTIONS.items() if getattr(args, opt) is not None}
    if args.no_histograms:
        given["histograms"] = False
    if args.centre_clips:
        given["centre_clips"] = True
    return {**given, "model_options": _options(args.option)}


def cmd_models(args) -> None:
    from avmatch.models import list_models
    from avmatch.training import named_recipes

    for m in list_models():
        print(f"{m.name:10s} {m.summary}")
    named = named_recipes()
    if named:
        print("\nnamed recipes (avmatch train --recipe NAME): a model and how to train it")
        for name, r in named.items():
            options = ", ".join(f"{k}={v}" for k, v in r.get("model_options", {}).items())
            print(f"{name:10s} {r['model']}" + (f" ({options})" if options else ""))
    print("\n'the report': the university report on matching per-second features that avmatch grew out of, "
          "written for a course (README: Feature files)")


def cmd_inspect(args) -> None:
    from avmatch.models import build_model
    from avmatch.models.base import parameter_table

    if Path(args.model).exists():
        from avmatch.checkpoint import load_trained

        model = load_trained(args.model).model
    else:
        model = build_model(args.model, args.video_dim, args.audio_dim, **_options(args.option))
    table = parameter_table(model)
    width = max(len(n) for n, _ in table)
    print(f"{model.name} (video {model.config['video_dim']}, audio {model.config['audio_dim']})")
    for name, count in table:
        print(f"  {name:{width}s} {count:>10,d}")
    print(f"  {'total':{width}s} {sum(c for _, c in table):>10,d}")


def cmd_train(args) -> None:
    import avmatch
    from avmatch.features.cache import training_features
    from avmatch.training import choose_start, launch_processes, named_recipes

    if args.ddp > 1 and "WORLD_SIZE" not in os.environ:  # the processes it starts find WORLD_SIZE set
        launch_processes(args.ddp, args.argv)
        return
    first = os.environ.get("RANK", "0") == "0"  # under torchrun, one process speaks
    corpus = training_features(args.corpus)
    model, init = choose_start(corpus, args.model or "", args.init or "", args.recipe or "")
    if not args.model and not args.init and not args.recipe and first:
        named = named_recipes().get(model, {}).get("model")  # a recipe that suits the corpus's extractor
        note("fine-tuning the shipped model on this corpus (--init none: a new model)" if init else
             f"no --model given; using {f'the recipe {model!r} ({named})' if named else repr(model)} for this corpus")
    trained = avmatch.train(corpus, args.output, resume=args.resume, force=args.force, device=args.device,
                            recipe=args.recipe or "", model=model, init=init, **_train_settings(args))
    result = trained.metrics
    if first:
        print(f"{trained.name}: best validation top-1 {result['val_top1']:.3f} at epoch {result['best_epoch']} "
              f"of {result['epochs']} ({result['train_seconds']:.1f} s); run in {args.output}")
        if result.get("kept_start"):
            tuned = max((h["top1"] for h in result["history"]), default=float("nan"))
            print(f"fine-tuning did not clearly beat the model it started from on the validation clips (top-1 "
                  f"{result['start_top1']:.3f} before any training, {tuned:.3f} at best after; replacing it takes "
                  f"a gain of more than {result['clear_gain']:.3f}): best.pt keeps the starting weights")


def match_options(args: argparse.Namespace) -> MatchOptions:
    """The :class:`avmatch.matching.MatchOptions` that ``avmatch match``'s arguments give: each option
    is stored under its field's name, so they are copied by name."""
    import dataclasses

    from avmatch.matching import MatchOptions

    names = [f.name for f in dataclasses.fields(MatchOptions)]
    return MatchOptions(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def cmd_match(args) -> None:
    import avmatch
    from avmatch.outputs import JsonWriter, get_writer, match_table

    settings = match_options(args)  # a bad combination is said before the model loads
    model = avmatch.load(args.model, args.device)
    result = model.match(args.videos, args.audios, match_options=settings, retriever=args.retriever,
                         workers=args.workers, options=_options(args.option), adapt=args.adapt, progress=True)
    output = args.output or f"pairs.{args.format}"
    if output == "-":  # the pairs on standard output (no score file or heat map to go with them)
        sys.stdout.write(get_writer(args.format).text(match_table(result)))
        return
    written = result.write(output, heatmap=not args.no_heatmap, format=args.format)
    if args.report:
        from avmatch.report import match_report

        written.append(match_report(args.report, result, {"model": f"{model.name} ({args.model})",
                                                          "extractor": model.trained.extractor.name or ""}))
    if args.json:  # the pairs as --format json writes them, and the files written, for a program to read
        print(json.dumps({**JsonWriter().document(match_table(result)), "written": [str(p) for p in written]},
                         indent=2))
        return
    print(f"matched {len(result.video_ids)} videos against {len(result.audio_ids)} audios "
          f"({result.method}{', two-stage' if result.sparse else ''}); wrote {', '.join(str(p) for p in written)}")
    if result.adapted:
        print(f"adapted to these clips: {len(result.adapted)} round(s), fine-tuned on "
              f"{' then '.join(str(n) for n in result.adapted)} pairs it was sure of (--adapt 0: none)")
    if args.greedy:
        return
    unmatched_videos, unmatched_audios = int((result.chosen < 0).sum()), result.unmatched_audios()
    if unmatched_videos or unmatched_audios:
        print(f"left unmatched: {unmatched_videos} videos (empty audio in {output}), {len(unmatched_audios)} audios"
              + (f": {', '.join(unmatched_audios[:10])}{' ...' if len(unmatched_audios) > 10 else ''}"
                 if unmatched_audios else ""))


def cmd_locate(args) -> None:
    import avmatch
    from avmatch.outputs import get_writer, placements_table, write_placements

    placements = avmatch.load(args.model, args.device).locate(args.clips, args.recordings, min_confidence=args.min_confidence,
                                                  reverse=args.reverse, workers=args.workers, progress=True,
                                                  camera=False if args.camera == "none" else args.camera,
                                                  adapt=args.adapt)
    output = args.output or f"placements.{args.format}"
    if output == "-":
        sys.stdout.write(get_writer(args.format).text(placements_table(placements)))
        return
    write_placements(placements, output, args.format)
    if args.report:
        from avmatch.report import placements_report

        placements_report(args.report, placements)
    refused = [p for p in placements if not p.recording]
    adapted = max((p.adapted_on for p in placements), default=0)
    print(f"placed {len(placements) - len(refused)} of {len(placements)} clips in {output}"
          + (f" (the model adapted on the {adapted} it placed surely first; --adapt 0: not)" if adapted else "")
          + (f"; refused {len(refused)}:" if refused else ""))
    for p in refused[:10]:  # a refusal names the best place, so a person can look
        where = f"best place {p.best_recording} at {p.start_s:.2f} s, confidence {p.confidence:.2f}" if p.best_recording \
            else "no place"
        print(f"  {p.clip}: {p.why or 'refused'} ({where})")
    if len(refused) > 10:
        print(f"  ... and {len(refused) - 10} more (the 'why' column of {output})")


def cmd_mux(args) -> None:
    from avmatch.mux import mux

    done = mux(args.result, args.videos, args.audios, args.output)
    n = len(done["written"])
    skipped = done["skipped"]
    print(f"wrote {n} video{'' if n == 1 else 's'} with {'its' if n == 1 else 'their'} audio to {args.output}"
          + (f", kept {len(done['kept'])} already there" if done["kept"] else "")
          + (f"; {len(done['failed'])} failed (see {Path(args.output) / 'failed.csv'})" if done["failed"] else "")
          + (f"; skipped {len(skipped)} that {args.result} gives no audio (refused or left unmatched): "
             f"{', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}" if skipped else ""))
    if done["failed"] and not done["written"] and not done["kept"]:
        raise AvmatchError(f"every one of the {len(done['failed'])} videos failed; see {Path(args.output) / 'failed.csv'}")


def cmd_index(args) -> None:
    import avmatch
    from avmatch.matching.index import index_corpus

    model = avmatch.load(args.model)
    corpus = model.features(args.corpus, _options(args.option), args.workers)
    trained = model.trained
    index = index_corpus(trained, corpus, args.kind, model=str(args.model), nlist=args.nlist, nprobe=args.nprobe,
                         hnsw_m=args.hnsw_m, ef_search=args.ef_search, pq_bytes=args.pq_bytes)
    index.save(args.output)
    print(f"indexed {len(index.video_ids)} videos and {len(index.audio_ids)} audios "
          f"({index.kind}, {index.audio.d} dims) in {args.output}")
    for direction, r in index.recall.items():
        print(f"recall {direction} vs exact search ({r['queries']} queries): "
              + ", ".join(f"{k} {v:.3f}" for k, v in r.items() if k.startswith("recall")))


def cmd_search(args) -> None:
    from avmatch.matching.index import load_index

    index = load_index(args.index)
    if args.like:  # the query's own modality: video -> videos, audio -> audios
        hits = index.similar(args.query, args.k, audio=args.audio)
        own = "audio" if args.audio else "video"
        other, score = f"similar_{own}", "similarity"
    else:
        hits = index.search(args.query, args.k, audio=args.audio)
        own, other = ("audio", "video") if args.audio else ("video", "audio")
        score = "score"
    if args.json:
        print(json.dumps({q: [{other: c, score: s} for c, s in h] for q, h in zip(args.query, hits, strict=True)},
                         indent=2))
        return
    print(f"{own},rank,{other},{score}")
    for q, h in zip(args.query, hits, strict=True):
        for rank, (clip, score) in enumerate(h, 1):
            print(f"{q},{rank},{clip},{score:.6g}")


def cmd_evaluate(args) -> None:
    import avmatch

    if args.heatmap:
        from avmatch.metrics import evaluate_pairs

        metrics = evaluate_pairs(args.pairs, args.key, heatmap=args.heatmap)
    else:
        metrics = avmatch.evaluate(args.pairs, args.key)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    from avmatch.metrics import SCORES

    print(f"pairs: {metrics['pairs']}")
    for k in ("one_to_one", "top5_within_30", "in_candidates", "offset_mae_s", "offset_within_40ms"):
        if k in metrics:
            print(f"{k:18s} {metrics[k]:.3f}")
    if "confidence_ece" in metrics:
        sure = metrics["confidence_n_sure"]
        sure_right = f"of the {sure} pairs at >= 0.9, {metrics['confidence_right_when_sure']:.3f} right" if sure \
            else "no pair at >= 0.9"
        print(f"confidence: {sure_right}; expected calibration error {metrics['confidence_ece']:.3f}")
    for prefix, what in SCORES.items():
        if prefix + "top1" in metrics:
            print(f"ranked on {what}:")
            for k in ("top1", "top5", "mrr"):
                print(f"  {prefix + k:16s} {metrics[prefix + k]:.3f}")
    for w in metrics["wrong"]:
        print(f"wrong: {w['video']} -> {w['chosen'] or '(unmatched)'} (true {w['true']})")


def cmd_compare(args) -> None:
    from avmatch.corpus import load_corpus
    from avmatch.demo.compare import compare, model_entries
    from avmatch.training import COMPARE

    compare(load_corpus(args.corpus), model_entries(args.models), args.output, {**COMPARE, **_train_settings(args)},
            args.test_fraction, inputs=tuple(args.inputs.split(",")))
    print((Path(args.output) / "compare.md").read_text())


def cmd_extract(args) -> None:
    import avmatch

    summary = avmatch.extract(args.sources, args.output, args.extractor, options=_options(args.option),
                              workers=args.workers, paired=args.paired, cluster=args.cluster)
    print(summary.line())
    if summary.failed:
        print(f"failed files and reasons: {Path(args.output) / 'failed.csv'}")


def cmd_extractors(args) -> None:
    from avmatch.features import list_extractors

    for e in list_extractors():
        print(f"{e.name:10s} v{e.version}  {(e.__doc__ or '').strip().splitlines()[0]}")


def cmd_make_features(args) -> None:
    from avmatch.testing.featuregen import write_feature_task

    knobs = {k: getattr(args, k) for k in ("content", "timing") if getattr(args, k) is not None}
    if knobs and args.shape != "course":
        raise AvmatchError("--content and --timing weigh the course-shaped generator's parts: use them with --shape course")
    written = write_feature_task(args.output, args.clips, args.test, args.video_dim, args.audio_dim, args.seed,
                                 args.shape, **knobs)
    print(f"wrote {args.clips} generated clips ({args.shape}-shaped) to {args.output}" + (
        f"; a test set of {args.test} pairs: {written['videos']}, {written['audios']}, key {written['key']}"
        if args.test else ""))


def cmd_demo(args) -> None:
    from avmatch.demo import run_demo

    run_demo(args.output, quick=args.quick, seed=args.seed, n_train=args.train_clips, n_test=args.test_clips,
             epochs=args.epochs)


def _add_train_options(p: argparse.ArgumentParser, epochs: str = "") -> None:
    """The training options; each one not given keeps its recipe's or avmatch.training.TrainConfig's
    default (``epochs``: where this command's --epochs default comes from instead, in words)."""
    recipe = " (default: the model's recipe, else avmatch.training.TrainConfig's)"
    p.add_argument("--epochs", type=int, default=None, help="training epochs" + (f" (default: {epochs})" if epochs else recipe))
    p.add_argument("--batch-size", type=int, default=None, help="clips per step" + recipe)
    p.add_argument("--lr", type=float, default=None, help="learning rate" + recipe)
    p.add_argument("--clip-grad", type=float, default=None, help="max gradient norm (0: no clipping)")
    p.add_argument("--window", type=float, default=None, help="training window in seconds (0: whole clip)")
    p.add_argument("--val-fraction", type=float, default=None, help="share of clips held out for validation" + recipe)
    p.add_argument("--patience", type=int, default=None, help="early stopping: epochs without a better validation top-1")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same weights)" + recipe)
    p.add_argument("--no-histograms", action="store_true", help="skip TensorBoard histograms (faster)")
    p.add_argument("--centre-clips", action="store_true",
                   help="take each clip's own mean over time from its features before the z-scores: the model "
                        "reads what changes within a clip, not what it is throughout")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option, repeatable")


def has_default(action: argparse.Action) -> bool:
    """Whether an option has a default worth saying: not a flag's False, an absent None or an empty list
    (a default of 0 is one: ``0 in (False, ...)`` is true in Python, so compare by identity)."""
    return bool(action.option_strings) and not any(action.default is x for x in (None, False, argparse.SUPPRESS)) \
        and action.default != []


class _Help(argparse.RawDescriptionHelpFormatter):
    """--help gives each option's default, where it has one and its help does not say it already."""

    def _get_help_string(self, action):
        text = action.help or ""
        if has_default(action) and "default" not in text:
            text += " (default: %(default)s)"
        return text


# one example per subcommand, shown at the end of its --help
EXAMPLES = {
    "models": "avmatch models",
    "inspect": "avmatch inspect --model lstm-cnn",
    "train": "avmatch extract train_clips/ -o feats --paired && avmatch train feats -o run",
    "locate": "avmatch locate takes/ recorder/ -o placements.csv --report timeline.html",
    "mux": "avmatch mux pairs.csv videos/ audios/ -o with_sound",
    "match": "avmatch match videos/ audios/ -o pairs.csv            # the shipped model, no training",
    "index": "avmatch index feats --model run -o feats.index",
    "search": "avmatch search feats.index clip0001 -k 5",
    "evaluate": "avmatch evaluate pairs.csv --key key.csv",
    "compare": "avmatch make-features -o course && avmatch compare course --epochs 10",
    "extract": "avmatch extract clips/ -o feats --workers 2",
    "extractors": "avmatch extractors",
    "make-features": "avmatch make-features -o course --clips 300 --test 30",
    "demo": "avmatch demo -o avmatch-demo",
}


class _Parser(argparse.ArgumentParser):
    """argparse with avmatch's one-line error (a bad option value reads like any other bad input)."""

    def error(self, message: str):
        print(f"avmatch: error: {self.prog}: {_one_line(message)} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from avmatch import __version__

    parser = _Parser(prog="avmatch", description="Find which audio belongs to which silent video.",
                                     formatter_class=_Help, epilog="example:\n  " + EXAMPLES["match"])
    parser.add_argument("--version", action="version", version=f"avmatch {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes; results and errors only")
    parser.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("inspect", help="per-layer parameter table of a model or a trained run")
    p.add_argument("--model", required=True, help="model name or run folder / checkpoint")
    p.add_argument("--video-dim", type=count, default=1024, help="visual feature columns of a model built by name")
    p.add_argument("--audio-dim", type=count, default=128, help="audio feature columns of a model built by name")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model option, repeatable")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", help="train a model on a feature corpus")
    p.add_argument("corpus", help="feature corpus of paired clips (from a folder of paired media: avmatch extract "
                   "--paired, as in the example below)")
    p.add_argument("-o", "--output", required=True, help="run folder")
    p.add_argument("--model", default=None, help="model name (default: the shipped model's, fine-tuned, where the "
                   "features fit it; else the one that suits the corpus; naming one trains a new model)")
    p.add_argument("--recipe", default=None, metavar="NAME",
                   help="a named recipe: a model and how to train it ('report': the university report's lstm-cnn, "
                        "trained its way; 'seconds': sync comparing one-row-a-second features second by second, "
                        "the default for the classic extractor's)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output")
    p.add_argument("--force", action="store_true", help="replace the run already in --output (deletes it first)")
    p.add_argument("--init", default=None, metavar="RUN",
                   help="fine-tune: start from this run or checkpoint ('default': the shipped model, which is where "
                        "training starts when no --model, --recipe or --init is given and the features fit it; "
                        "'none': a new model)")
    p.add_argument("--ddp", type=int, default=0, metavar="N",
                   help="train with DistributedDataParallel in N local processes (starts torchrun; "
                        "--batch-size stays the global batch; default 0: one process, no torchrun)")
    _add_train_options(p)
    p.add_argument("--device", default="auto", help="where the model runs: auto (CUDA where present), cpu, cuda, cuda:N")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("locate", help="place short silent clips inside long audio recordings (which one, where)")
    p.add_argument("clips", help="silent videos (media file/folder or feature corpus); with --reverse, audio snippets")
    p.add_argument("recordings", help="long audio recordings; with --reverse, long silent videos")
    p.add_argument("-o", "--output", default=None,
                   help="placements file to write (default: placements.csv, or .json with --format json); "
                        "'-': standard output")
    p.add_argument("--format", default="csv", choices=["csv", "json"],
                   help="csv (default) or json (the same rows, NaN as null)")
    p.add_argument("--model", default="default", help="run folder or checkpoint of a timing model (default: shipped)")
    p.add_argument("--min-confidence", type=share, default=None,
                   help="refuse placements less likely right than this (default 0.5)")
    p.add_argument("--reverse", action="store_true", help="short audio snippets inside long silent videos")
    p.add_argument("--adapt", type=whole, default=0, metavar="N",
                   help="rounds of adaptation: the model fine-tuned on the clips it placed surely (each with its stretch "
                        "of recording), then every clip placed again (default 0: none; 1 places more takes of kinds the "
                        "model never saw but refuses fewer takes nobody recorded; needs 16 sure clips)")
    p.add_argument("--report", default=None, metavar="HTML", help="also write a report: a timeline per recording, "
                   "the refused clips listed")
    p.add_argument("--camera", default=None, metavar="REGEX",
                   help="what names a clip's camera in its id (clips of one camera never overlap in time); "
                        "default: its folder; 'none': no cameras")
    p.add_argument("--workers", type=count, default=1, help="extraction processes for media")
    p.add_argument("--device", default="auto", help="where the model runs: auto (CUDA where present), cpu, cuda, cuda:N")
    p.set_defaults(func=cmd_locate)

    p = sub.add_parser("mux", help="write each video with its recovered audio, in sync (video stream copied)")
    p.add_argument("result", help="pairs.csv (avmatch match) or placements.csv (avmatch locate)")
    p.add_argument("videos", help="the silent videos (folder or file) the result names")
    p.add_argument("audios", help="the audio files or recordings (folder or file) the result names")
    p.add_argument("-o", "--output", required=True, help="folder for the videos with sound; a rerun keeps those there")
    p.set_defaults(func=cmd_mux)

    p = sub.add_parser("match", help="match silent videos to audios with a trained model")
    p.add_argument("videos", help="feature corpus, or media file/folder (extracted with the run's extractor, cached)")
    p.add_argument("audios", help="feature corpus, or media file/folder")
    p.add_argument("--workers", type=count, default=1, help="extraction processes for media input")
    p.add_argument("--model", default="default",
                   help="run folder or checkpoint (default: the model shipped with avmatch, no training needed)")
    p.add_argument("-o", "--output", default=None,
                   help="pairs file to write (default: pairs.csv, or .json with --format json), with its score file "
                        "and heat map beside it; '-': the pairs on standard output")
    p.add_argument("--format", default="csv", choices=["csv", "json"],
                   help="csv (default) or json (the same rows, NaN as null, with the method and the audios left "
                        "unmatched)")
    p.add_argument("--greedy", action="store_true", help="each video's best audio instead of a one-to-one assignment")
    p.add_argument("--normalise", default="dual-softmax", choices=["dual-softmax", "none"],
                   help="score normalisation before assigning (counters 'hub' audios)")
    p.add_argument("--max-offset", type=float, default=None, dest="max_offset_s", metavar="MAX_OFFSET",
                   help="seconds of lag searched by timing models, a lag counting only where the clips "
                        "overlap by 65%% of the shorter (default: 5 s; up to 20 minutes)")
    p.add_argument("--no-heatmap", action="store_true", help="do not draw the heat map")
    p.add_argument("--report", default=None, metavar="HTML",
                   help="also write a report: pairs sortable, doubtful first, each playable with its audio at the offset")
    p.add_argument("--json", action="store_true",
                   help="print the pairs as JSON (as --format json writes them) and the files written")
    p.add_argument("--min-confidence", type=share, default=0.0, metavar="P",
                   help="leave a video unmatched when its pair's confidence is below P (default 0: match every video)")
    p.add_argument("--adapt", type=whole, default=None, metavar="N",
                   help="rounds of adaptation to these clips: a timing model fine-tuned on the pairs it is sure of, "
                        "then everything matched again (default 3; 0: none; dense matching only)")
    p.add_argument("--mode", default="auto", choices=["auto", "dense", "two-stage"],
                   help="dense: score every pair; two-stage: score each video's top candidates only "
                        "(auto: dense up to 5000 x 5000 pairs)")
    p.add_argument("--candidates", type=count, default=None, metavar="K", help="two-stage: audios retrieved per video (default 10)")
    p.add_argument("--retriever", default=None, metavar="RUN",
                   help="two-stage: embedding model that retrieves the candidates (default: --model)")
    p.add_argument("--retrieval", default="auto", type=index_kind,
                   help="two-stage: FAISS index that retrieves them: flat (exact), ivf, ivfpq or hnsw (see avmatch "
                        "index); default auto: flat up to 100,000 audios, ivfpq above")
    p.add_argument("--shards", type=whole, default=0, metavar="N",
                   help="two-stage: cut the index into N shards searched as Dask tasks (default 0: one index here)")
    p.add_argument("--cluster", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="two-stage with --shards: the Dask scheduler that runs them (tcp://host:8786; with no "
                        "address a local cluster of --workers processes)")
    p.add_argument("--shard-dir", default=None, metavar="DIR",
                   help="with --shards: a folder the workers share, keeping each shard's answer as it finishes, so "
                        "the same match run again after a crash searches only the rest (default: a temporary folder)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extractor option for media input (e.g. weights=PATH: the network the run's features came from)")
    p.add_argument("--device", default="auto", help="where the model runs: auto (CUDA where present), cpu, cuda, cuda:N")
    p.set_defaults(func=cmd_match)

    p = sub.add_parser("index", help="export a corpus's video and audio embeddings into a FAISS index")
    p.add_argument("corpus", help="feature corpus, or media file/folder")
    p.add_argument("--model", required=True, help="run folder or checkpoint of an embedding model")
    p.add_argument("-o", "--output", required=True, help="index folder")
    p.add_argument("--kind", default="flat", type=index_kind,
                   help="flat: exact inner product; ivf, hnsw: approximate, recall reported; ivfpq: ivf keeping "
                        "--pq-bytes of code a vector in memory, re-ranked by the full vectors kept on disk "
                        "(default: %(default)s)")
    p.add_argument("--nlist", type=count, default=None, help="ivf: cells (default about 4 sqrt(N))")
    p.add_argument("--nprobe", type=count, default=None, help="ivf: cells searched per query (default: the fewest at which 95%% of sampled queries find their exact best among the top k)")
    p.add_argument("--pq-bytes", type=count, default=None, help="ivfpq: bytes of code a vector (plus 8 of id; "
                   "default 32: 80 bytes a clip with both modalities)")
    p.add_argument("--hnsw-m", type=count, default=32, help="hnsw: links per node")
    p.add_argument("--ef-search", type=count, default=128, help="hnsw: search beam width")
    p.add_argument("--workers", type=count, default=1, help="extraction processes for media input")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extractor option for media input (e.g. weights=PATH: the network the run's features came from)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="the best audios for a video (or videos for an audio) in an index")
    p.add_argument("index", help="index folder (avmatch index)")
    p.add_argument("query", nargs="+", help="clip ids in the index")
    p.add_argument("-k", type=count, default=5, help="results per query")
    p.add_argument("--audio", action="store_true", help="queries are audio clips; find their videos")
    p.add_argument("--like", action="store_true",
                   help="find clips of the query's own modality instead (video -> videos, audio -> audios)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate", help="score pairs.csv against a key")
    p.add_argument("pairs", help="pairs.csv written by avmatch match")
    p.add_argument("--key", required=True, help="CSV with columns video,audio")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--heatmap", default=None, metavar="PNG",
                   help="also draw the scores with each video's true audio on the diagonal, wrong choices marked")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="train several models and tabulate them")
    p.add_argument("corpus", help="feature corpus of paired clips")
    p.add_argument("--models", default="va-metric,rnn,lstm,gru,cnn,lstm-tw,lstm-cnn,report,dual",
                   help="models (or named recipes such as report) to train, comma-separated, each with model "
                        "options after a colon if wanted (report:interleave=true); ';' between entries when one "
                        "has several options")
    p.add_argument("-o", "--output", default="compare", help="folder for the runs and the table")
    p.add_argument("--test-fraction", type=float, default=0.3, help="share of clips kept out of training as the test set")
    p.add_argument("--inputs", default="global", choices=("global", "clip", "global,clip"),
                   metavar="global|clip|global,clip",
                   help="input normalisations offered to every model: global z-scores, per-clip centring "
                        "(--centre-clips) or both, each model keeping the one of the better validation top-1")
    _add_train_options(p, epochs="the compare recipe's, avmatch.training.COMPARE, every model alike")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("extract", help="extract feature sequences from media files into a corpus")
    p.add_argument("sources", nargs="+", help="media files and/or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, help="corpus folder (a rerun resumes it)")
    p.add_argument("--extractor", default="default", help="feature extractor (avmatch extractors lists them)")
    p.add_argument("--workers", type=count, default=1, help="processes decoding in parallel")
    p.add_argument("--paired", action="store_true", help="every file must have video and audio (a training folder)")
    p.add_argument("--cluster", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run files as Dask tasks: on the scheduler at ADDRESS (tcp://host:8786), or on a local "
                        "cluster of --workers processes when no address is given")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="extractor option, repeatable")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("extractors", help="list the feature extractors")
    p.set_defaults(func=cmd_extractors)

    p = sub.add_parser("make-features", help="write a generated feature corpus (for trying avmatch out)")
    p.add_argument("-o", "--output", required=True, help="corpus folder")
    p.add_argument("--clips", type=count, default=300, help="paired clips")
    p.add_argument("--test", type=whole, default=0, metavar="N",
                   help="also N test pairs of other clips: OUT/test/videos, OUT/test/audios, OUT/test/key.csv (default 0)")
    p.add_argument("--video-dim", type=count, default=1024, help="visual feature columns")
    p.add_argument("--audio-dim", type=count, default=128, help="audio feature columns")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    from avmatch.testing.featuregen import SHAPES

    p.add_argument("--shape", choices=SHAPES, default="course",
                   help="course: 120 rows a clip, picture and sound linked by content and by per-second events, "
                        "stored as uint8 codes, like the course's features; timing: 20-40 rows linked by events "
                        "(and a little content) only (default course)")
    p.add_argument("--content", type=share, default=None,
                   help="course shape: weight of the content both modalities see, 0-1 (default 1)")
    p.add_argument("--timing", type=share, default=None,
                   help="course shape: weight of the per-second events both modalities see, 0-1 (default 1)")
    p.set_defaults(func=cmd_make_features)

    p = sub.add_parser("demo", help="generate scenes as media files, extract, train, match a shuffled test set, report")
    p.add_argument("-o", "--output", default="avmatch-demo", help="folder for everything the demo makes")
    p.add_argument("--quick", action="store_true", help="a smaller, faster smoke run: 300 training clips, 40 test pairs")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--train-clips", type=count, default=None, help="training clips (default: 640, --quick 300)")
    p.add_argument("--test-clips", type=count, default=None, help="test pairs (default: 160, --quick 40)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: as the preset)")
    p.set_defaults(func=cmd_demo)
    for name, command in sub.choices.items():
        command.formatter_class = _Help
        command.epilog = "example:\n  " + EXAMPLES[name]
    return parser


def run_captured(argv: list) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``avmatch ARGV`` run in this process: what the robustness
    harness (``avmatch.testing.badinputs``) and the tests drive the command line with."""
    import contextlib
    import io

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for commands that relaunch themselves
    if args.quiet:  # the environment carries it to the processes a job starts (extraction workers, DDP)
        os.environ["AVMATCH_QUIET"] = "1"
    try:
        args.func(args)
    except AvmatchError as err:
        print(f"avmatch: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avmatch: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # the system said no (disk full, no permission, ...) to a file avmatch touched
        where = f"{err.filename}: " if err.filename else ""
        print(f"avmatch: error: {where}{_one_line(err.strerror or str(err) or type(err).__name__)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("avmatch: error: out of memory; try fewer clips, a smaller --batch-size or shorter media", file=sys.stderr)
        return 2
    except Exception as err:  # a bug, not a bad input: one line, the traceback on request
        if args.verbose or os.environ.get("AVMATCH_DEBUG"):
            raise
        print(f"avmatch: internal error ({type(err).__name__}: {_one_line(str(err))}); rerun with "
              "-v (or AVMATCH_DEBUG=1) for the traceback and please report it", file=sys.stderr)
        return 1
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()[:1000]


if __name__ == "__main__":
    sys.exit(main())
