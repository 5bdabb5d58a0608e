"""``avmatch demo``: the main job on real media, out of the box.

Generates scenes of two generators designed apart (:mod:`avmatch.demo.scenes` and :mod:`avmatch.demo.worlds`)
as .mp4 files, holding one family of each out of training (``HOLDOUT``), turns the test clips (of every
family) into silent videos and separately shifted audio files under random names, in mixed formats
(wav, flac, mp3 at 24 kbit/s, AAC, Opus), then runs what a user runs: extract -> train (as ``avmatch
train`` does by default: the shipped ``sync`` model, fine-tuned) -> match -> evaluate, and writes a
report. It prints the accuracy on the families in the training clips and, apart, on the held-out
ones (held out of this run; the shipped model saw other clips of every family: families never seen
are benchmarks/generalise.py's to measure); beside it the shipped model's (no training) and an
untrained floor: video motion energy against audio onset strength, correlated over the same lags.

Layout of the output folder::

    media/train/*.mp4           paired training clips (+ scenes.jsonl: family and event times)
    media/test_clips/*.mp4      the test clips before they were split
    media/test/videos/*.mp4     silent videos      media/test/audios/*  shifted audio, mixed formats
    key.csv                     video,audio,offset_s,source
    features/{train,test_videos,test_audios}   feature corpora
    run/                        the trained model (best.pt, metrics.json, TensorBoard events)
    pairs.csv, pairs.scores.npz, pairs.heatmap.png, report.html, demo.json
    pairs.judged.png            the heat map with the key's verdict: wrong choices crossed
    .avmatch-demo               marks the folder as the demo's: a rerun clears media/, features/, run/
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

import avmatch
from avmatch.atomic import write_text
from avmatch.corpus import Corpus, load_corpus
from avmatch.errors import AvmatchError
from avmatch.matching import assign, normalise
from avmatch.metrics import reliability as confidence_reliability
from avmatch.report import html_report

HOLDOUT = ("scenes:lamps", "worlds:keys")  # never trained on: the demo's unseen families
AUDIO_FORMATS = ("wav", "flac", "mp3-24k", "aac", "opus")  # the test audio files, in turn
MOTION_COLUMN = -1  # default extractor: global motion energy is the last visual column
ONSET_COLUMN = 40  # default extractor: onset strength follows the 40 log-mel bands


@dataclass
class DemoConfig:
    """Sizes and training settings of a demo run; ``DemoConfig()`` and ``DemoConfig.quick()`` are the
    presets (--quick is a smaller smoke run). Training settings left at None are the recipe's."""

    n_train: int = 640
    n_test: int = 160
    duration_s: float = 4.0
    size: tuple[int, int] = (64, 64)
    max_offset_s: float = 1.0
    # where training starts, as for `avmatch train`: "auto" (the shipped model, fine-tuned, where it fits
    # the features; else a new sync model), "none" (a new sync model) or a run to fine-tune
    init: str = "auto"
    epochs: int | None = None  # None: DEMO_FINE_TUNE's when fine-tuning, else the sync recipe's
    batch_size: int | None = None
    lr: float | None = None
    window_s: float | None = None
    patience: int | None = None
    model_options: dict = field(default_factory=dict)  # a new model's, over the sync recipe's (avmatch.training.RECIPES)
    workers: int = 0  # processes for generation and extraction; 0: as many as extraction uses by default
    extractor: str = "default"  # another one (e.g. "efficientnet" with fps=25) to compare features
    extractor_options: dict = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(n_train=300, n_test=40)


def motion_onset_scores(videos: list[np.ndarray], audios: list[np.ndarray], max_lag: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The untrained floor: how well each video's motion energy follows each audio's onset strength.

    Both signals are standardised per clip; a pair's score is the best correlation over lags in
    ±``max_lag`` rows (overlaps shorter than half the shorter clip do not count). Returns the (Nv, Na)
    scores and the (Nv, Na) best lag (video row t meets audio row t + lag).
    """
    def standardise(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        t = max(len(r) for r in rows)
        out = np.zeros((len(rows), t))
        for i, r in enumerate(rows):
            out[i, : len(r)] = (r - r.mean()) / (r.std() + 1e-6)
        return out, np.array([len(r) for r in rows])

    v, v_len = standardise([x[:, MOTION_COLUMN] for x in videos])  # (Nv, T)
    a, a_len = standardise([x[:, ONSET_COLUMN] for x in audios])  # (Na, T)
    t = max(v.shape[1], a.shape[1])
    v = np.pad(v, ((0, 0), (0, t - v.shape[1])))
    a = np.pad(a, ((0, 0), (0, t - a.shape[1])))
    min_overlap = np.maximum(np.minimum(v_len[:, None], a_len[None, :]) * 0.5, 1)
    best = np.full((len(v), len(a)), -np.inf)
    best_lag = np.zeros((len(v), len(a)), np.int64)
    for lag in range(-max_lag, max_lag + 1):
        if abs(lag) >= t:
            continue
        vs = v[:, max(0, -lag) : t - max(0, lag)]
        as_ = a[:, max(0, lag) : t - max(0, -lag)]
        count = np.minimum(v_len[:, None], a_len[None, :] - lag) - max(0, -lag)
        s = np.where(count >= min_overlap, (vs @ as_.T) / np.maximum(count, 1), -1.0)
        better = s > best
        best = np.where(better, s, best)
        best_lag = np.where(better, lag, best_lag)
    return best, best_lag


MARKER = ".avmatch-demo"  # says a folder was made by the demo, so a rerun may clear it


def _fresh_folder(out: Path) -> None:
    """Make ``out`` ready for a run: new, empty, or a previous demo's folder (whose outputs go, so no
    stale media or cached features mix into this run). Any other non-empty folder is refused."""
    if out.exists() and not out.is_dir():
        raise AvmatchError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise AvmatchError("folder is not empty and was not made by avmatch demo; give a new or empty folder", out)
        for name in ("media", "features", "run", "ablations"):
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by avmatch demo; a rerun clears media/, features/ and run/ here\n")


def _key_rows(path: Path) -> list[dict]:
    """The rows of the key the demo wrote (video,audio,offset_s,source)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read_key(path: Path) -> dict[str, tuple[str, float]]:
    return {r["video"]: (r["audio"], float(r["offset_s"])) for r in _key_rows(path)}


def floor_metrics(videos: Corpus, audios: Corpus, key: dict[str, tuple[str, float]], max_lag: int) -> dict:
    """One-to-one accuracy and offset error of the untrained motion-vs-onset floor."""
    v_clips = [c for c in videos.clips if c.video is not None]
    a_clips = [c for c in audios.clips if c.audio is not None]
    scores, lags = motion_onset_scores([c.video for c in v_clips], [c.audio for c in a_clips], max_lag)
    chosen = assign(normalise(scores), "hungarian")
    a_ids = [c.id for c in a_clips]
    right, errors = 0, []
    for i, c in enumerate(v_clips):
        true_audio, true_offset = key[c.id]
        if chosen[i] >= 0 and a_ids[chosen[i]] == true_audio:
            right += 1
            errors.append(abs(-lags[i, chosen[i]] / videos.video_rate_hz - true_offset))
    err = np.array(errors)
    return {"one_to_one": right / len(v_clips),
            "offset_within_40ms": float((err <= 0.040 + 1e-9).mean()) if len(err) else float("nan")}


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, flush=True)


def run_demo(out_dir: str | Path, quick: bool = False, seed: int = 0, config: DemoConfig | None = None,
             progress: bool = True, n_train: int | None = None, n_test: int | None = None,
             epochs: int | None = None) -> dict:
    """Generate media, extract, train, match, evaluate and report; returns the summary (also demo.json).

    ``config`` (or the preset: ``DemoConfig.quick()`` / ``DemoConfig()``) sets sizes and training;
    ``n_train``, ``n_test`` and ``epochs`` override it."""
    from avmatch.demo import scenes, worlds
    from avmatch.features.job import default_workers
    from avmatch.training import DEMO_FINE_TUNE

    cfg = replace(config or (DemoConfig.quick() if quick else DemoConfig()))
    cfg.n_train, cfg.n_test, cfg.epochs = n_train or cfg.n_train, n_test or cfg.n_test, epochs or cfg.epochs
    if cfg.n_train < 4 or cfg.n_test < 2:
        raise AvmatchError(f"the demo needs at least 4 training clips and 2 test pairs, not {cfg.n_train} and {cfg.n_test}")
    out = Path(out_dir)
    workers = cfg.workers or default_workers()
    _fresh_folder(out)
    started = time.perf_counter()
    stage = {}

    def lap(name: str, t0: float) -> float:
        stage[name] = round(time.perf_counter() - t0, 1)
        return time.perf_counter()

    t0 = time.perf_counter()
    test_clips, families, family_of = [], [], {}
    for k, mod in enumerate((scenes, worlds)):
        gen = mod.__name__.rsplit(".", 1)[1]
        every = [f"{gen}:{f}" for f in mod.available_families()]
        families += every
        trained_on = [f.split(":")[1] for f in every if f not in HOLDOUT]
        # each generator half the clips; file names unique across generators (the key names sources)
        half_train, half_test = (cfg.n_train + 1 - k) // 2, (cfg.n_test + 1 - k) // 2
        made = mod.make_corpus(out / "media" / "train" / gen, half_train, cfg.duration_s, seed, cfg.size,
                               first=k * 1_000_000, families=trained_on, workers=workers, progress=progress)
        clips = mod.make_corpus(out / "media" / "test_clips" / gen, half_test, cfg.duration_s, seed, cfg.size,
                                first=k * 1_000_000 + cfg.n_train, families=mod.available_families(),
                                workers=workers, progress=progress)
        test_clips += clips
        family_of.update({p: f"{gen}:{f}" for p, f in _families(out / "media" / "test_clips" / gen).items()})
        _say(progress, f"      {gen}: {len(made)} training clips, {len(clips)} test clips")
    key_csv = scenes.make_test_set(test_clips, out / "media" / "test", seed=seed, max_offset_s=cfg.max_offset_s)
    format_of = _mixed_formats(out / "media" / "test" / "audios", seed)
    write_text(out / "key.csv", key_csv.read_text())
    key = _read_key(out / "key.csv")
    t0 = lap("generate", t0)
    _say(progress, f"[1/5] generated {cfg.n_train} training clips and {cfg.n_test} test pairs "
         f"({cfg.duration_s:g} s, {cfg.size[0]}x{cfg.size[1]}; families {', '.join(families)}; never trained on: "
         f"{', '.join(HOLDOUT)}; test audio shifted by up to ±{cfg.max_offset_s:g} s, as "
         f"{', '.join(AUDIO_FORMATS)}) in {stage['generate']:.0f} s")

    feats = out / "features"
    for name, src, paired in (("train", out / "media" / "train", True),
                              ("test_videos", out / "media" / "test" / "videos", False),
                              ("test_audios", out / "media" / "test" / "audios", False)):
        summary = avmatch.extract([src], feats / name, cfg.extractor, options=cfg.extractor_options, workers=workers,
                          paired=paired, progress=progress)
        if summary.failed:
            raise RuntimeError(f"extraction failed for {len(summary.failed)} generated files; see {feats / name / 'failed.csv'}")
    train_set, videos, audios = (load_corpus(feats / n) for n in ("train", "test_videos", "test_audios"))
    t0 = lap("extract", t0)
    _say(progress, f"[2/5] extracted features ({cfg.extractor}, {train_set.video_rate_hz:g} Hz) of "
         f"{len(train_set.clips) + len(videos.clips) + len(audios.clips)} files in {stage['extract']:.0f} s")

    given = {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "window_s", "patience") if getattr(cfg, k) is not None}
    result = avmatch.train(train_set, out / "run", model="sync" if cfg.init == "none" else "",
                           init="" if cfg.init in ("auto", "none") else cfg.init, fine_tune=DEMO_FINE_TUNE, seed=seed,
                           max_shift_s=cfg.max_offset_s, histograms=False, model_options=dict(cfg.model_options),
                           progress=progress, **given).metrics
    # fine-tuned (a start measured) from the run given, or with "auto" from the shipped model
    init = ("default" if cfg.init == "auto" else cfg.init) if "start_top1" in result else ""
    t0 = lap("train", t0)
    how = f"fine-tuned {'the shipped model' if init == 'default' else init}" if init else "trained a new model"
    _say(progress, f"[3/5] {how} ({result['model']}): validation top-1 {result['val_top1']:.3f} at epoch "
         f"{result['best_epoch']} of {result['epochs']} in {stage['train']:.0f} s"
         + (f"; not clearly better than the {result['start_top1']:.3f} it started from, so it keeps the starting "
            "weights" if result.get("kept_start") else ""))

    trained = avmatch.load(out / "run", device="cpu")
    match = trained.match(videos, audios, adapt=0)
    match.to_csv(out / "pairs.csv")
    metrics = avmatch.evaluate(out / "pairs.csv", out / "key.csv")
    # the floor reads the default extractor's motion and onset columns
    floor = (floor_metrics(videos, audios, key, trained.trained.model.max_lag) if cfg.extractor == "default"
             else {"one_to_one": float("nan"), "offset_within_40ms": float("nan")})
    sources = {r["video"]: r["source"] for r in _key_rows(out / "key.csv")}
    family = {v: family_of.get(sources.get(v, ""), "") for v in key}
    rows = match.rows()
    wrong = {w["video"] for w in metrics["wrong"]}  # evaluate already judged every video of the key
    right = {v: v not in wrong for v in key}
    groups = {"trained-on families": [v for v in key if family[v] not in HOLDOUT],
              "held-out families": [v for v in key if family[v] in HOLDOUT]}
    by_group = {g: _share(right, vs) for g, vs in groups.items()}
    by_family = {f: _share(right, [v for v in key if family[v] == f]) for f in sorted(set(family.values()))}
    by_format = {f: _share(right, [v for v in key if format_of.get(key[v][0]) == f]) for f in AUDIO_FORMATS}
    reliability = confidence_reliability(match.confidence, np.array([right.get(v, False) for v in match.video_ids]))
    shipped = _shipped_one_to_one(videos, audios, key)
    t0 = lap("match", t0)
    n = len(key)
    _say(progress, f"[4/5] matched {n} silent videos to {len(audios.clips)} audios in {stage['match']:.0f} s")
    _say(progress, f"      one-to-one {metrics['one_to_one']:.3f}   top-1 {metrics['top1']:.3f}   "
         f"top-5 {metrics['top5']:.3f} on the model's own scores, {metrics['normalised_top1']:.3f} and "
         f"{metrics['normalised_top5']:.3f} normalised   (chance {1 / n:.3f})")
    _say(progress, "      one-to-one " + ", ".join(f"{g} {x:.3f} ({len(groups[g])} pairs)" for g, x in by_group.items())
         + ("\n      (held out of this run's training clips only: the shipped model it starts from was trained on "
            "other clips of every family; on families never seen see benchmarks/generalise.py)" if init == "default" else ""))
    _say(progress, "      by audio format: " + ", ".join(f"{f} {x:.3f}" for f, x in by_format.items()))
    _say(progress, f"      offset within 40 ms {metrics.get('offset_within_40ms', float('nan')):.3f} of the right pairs, "
         f"median error {1000 * metrics.get('offset_median_s', float('nan')):.0f} ms")
    _say(progress, f"      confidence: of the {reliability['n_sure']} pairs at >= 0.9, {reliability['right_when_sure']:.3f} "
         f"right; expected calibration error {reliability['ece']:.3f}")
    if shipped is not None:
        _say(progress, f"      the shipped model, no training: one-to-one {shipped:.3f}")
    _say(progress, f"      untrained floor (motion energy vs onset strength): one-to-one {floor['one_to_one']:.3f}, "
         f"offset within 40 ms {floor['offset_within_40ms']:.3f}")

    summary = {
        "avmatch": avmatch.__version__, "run": time.strftime("%Y-%m-%d %H:%M:%S"), "seed": seed,
        "model": f"{trained.name} ({out / 'run'})", "started from": init or "a new model",
        "extractor": cfg.extractor,
        "test pairs": n, "training clips": cfg.n_train, "one-to-one": metrics["one_to_one"],
        **{f"one-to-one, {g}": x for g, x in by_group.items()},
        "top-1 (raw scores)": metrics["top1"], "top-5 (raw scores)": metrics["top5"],
        "top-1 (normalised)": metrics["normalised_top1"], "top-5 (normalised)": metrics["normalised_top5"],
        "chance": 1 / n,
        "offset within 40 ms": metrics.get("offset_within_40ms", float("nan")),
        "offset median error (s)": metrics.get("offset_median_s", float("nan")),
        "pairs with confidence >= 0.9": reliability["n_sure"], "right among them": reliability["right_when_sure"],
        "confidence calibration error": reliability["ece"],
        "shipped model one-to-one": float("nan") if shipped is None else shipped,
        "floor one-to-one": floor["one_to_one"], "floor offset within 40 ms": floor["offset_within_40ms"],
        "seconds": round(time.perf_counter() - started, 1),
    }
    pairs = []
    for r in rows:
        true_audio, true_offset = key.get(r["video"], ("", float("nan")))
        pairs.append({"video": r["video"], "scene": family.get(r["video"], "")
                      + (" (held out)" if family.get(r["video"]) in HOLDOUT else ""),
                      "audio": r["audio"], "format": format_of.get(r["audio"], ""), "score": r["score"],
                      "margin": r["margin"], "confidence": r.get("confidence", float("nan")), "offset_s": r.get("offset_s", float("nan")), "true audio": true_audio,
                      "true offset_s": true_offset, "right": r["audio"] == true_audio})
    # the heat map again, now that the key says which choices are right (the match's own stays as written)
    places: dict = {}
    judged = match.heatmap(out / "pairs.judged.png", key={v: a for v, (a, _) in key.items()}, places=places)
    html_report(out / "report.html", "avmatch demo", [summary], pairs, judged,
                image_title="Score matrix (each video's true audio on the diagonal; x: a wrong choice)",
                rows_title="Pairs (a video's name links to its place in the score matrix)", places=places)
    stage["total"] = summary["seconds"]
    write_text(out / "demo.json", json.dumps({"summary": summary, "metrics": metrics, "floor": floor,
                                              "stage_seconds": stage, "config": asdict(cfg),
                                              "families": families, "held_out": list(HOLDOUT),
                                              "by_family": by_family, "by_format": by_format, "train": {k: v for k, v in result.items() if k != "history"}},
                                             indent=2, default=str))
    _say(progress, f"[5/5] wrote {out / 'report.html'} and {out / 'demo.json'} ({summary['seconds']:.0f} s in all)")
    return {**summary, "metrics": metrics, "floor": floor, "stage_seconds": stage, "by_family": by_family,
            "by_format": by_format}


def _share(right: dict[str, bool], videos: list[str]) -> float:
    return float(np.mean([right.get(v, False) for v in videos])) if videos else float("nan")


def _shipped_one_to_one(videos: Corpus, audios: Corpus, key: dict) -> float | None:
    """One-to-one of the model shipped in the package on the same features (None if there is none,
    or it reads other features)."""
    from avmatch.features.record import ExtractorRecord

    try:
        shipped = avmatch.load("default", device="cpu")
    except AvmatchError:  # this installation has no shipped model
        return None
    made = ExtractorRecord.from_dict(videos.extractor)
    if (shipped.trained.extractor.name, shipped.trained.extractor.version) != (made.name, made.version):
        return None
    result = shipped.match(videos, audios, adapt=0)
    chosen = {r["video"]: r["audio"] for r in result.rows()}
    return _share({v: chosen.get(v) == a for v, (a, _) in key.items()}, list(key))


def _mixed_formats(audio_dir: Path, seed: int) -> dict[str, str]:
    """Re-encode the test's .wav files in turn as each of AUDIO_FORMATS (same file stem, the format's
    suffix), as a user's pile of audio would be; returns {audio id: format}."""
    from avmatch.demo.scenes import SAMPLE_RATE
    from avmatch.media import read_audio
    from avmatch.testing.formats import write_format

    rng = np.random.default_rng([seed, 3])
    format_of = {}
    for i, wav in enumerate(sorted(audio_dir.glob("*.wav"))):
        name = AUDIO_FORMATS[i % len(AUDIO_FORMATS)]
        format_of[wav.stem] = name
        if name != "wav":
            write_format(read_audio(wav, SAMPLE_RATE), SAMPLE_RATE, wav.with_suffix(""), name, rng)
            wav.unlink()
    return format_of


def _families(media_dir: Path) -> dict[str, str]:
    path = media_dir / "scenes.jsonl"
    if not path.exists():
        return {}
    return {row["file"]: row["family"] for row in map(json.loads, path.read_text().splitlines()) if row}
