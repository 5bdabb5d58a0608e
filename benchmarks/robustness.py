"""Robustness: every reader on every bad input, and jobs killed with SIGKILL then rerun. Prints tables.

    python benchmarks/robustness.py [--details] [--kills 3] [--keep DIR]

1. The bad-input corpus of ``avmatch.testing.badinputs`` (made on the spot: truncated and bit-flipped
   mp4/mkv/webm, empty and renamed files, missing streams, 1-frame and 1 ms media, huge dimensions and
   durations in headers, bad .npy files, pickles, bad manifests and paths, bad checkpoints) goes
   through every reader of its kind: library functions, the CLI (``avmatch extract FILE``, ``train``,
   ``inspect``) and one batch ``extract`` over all media. A table per kind shows each case's outcome
   per reader:  ok | error (one line naming the file; CLI exit 2; a failed.csv row in the batch) |
   unclear | crash | hang | wrong (handled, but not as the case expects).
2. ``avmatch train`` and ``avmatch extract`` are killed with SIGKILL at random moments and rerun until
   they complete; their results are compared with uninterrupted runs (training: per-epoch loss and
   validation metrics; extraction: every feature array, to 1e-5: the children run on one BLAS thread).
3. Trust (issue 10, headline): each case of ``badinputs.trust_cases`` (an output set mixed from two
   runs, a run folder written over, checkpoints asking for more than their weights or naming code,
   a forged FAISS file, a distance model's index, features at another rate, keys that are not
   one-to-one, options out of range) runs as ``avmatch ...`` in a process of its own. A run that exits
   0 must give the clean run's answer, else it is a SILENT WRONG ANSWER; errors must be one line
   (exit 2), never a traceback or an internal error; peak memory of each run is reported. Causes 1
   and 6 are scenarios (``badinputs.identity_scenarios``: match or extract, change the files, run
   again) judged the same way against a fresh run on the changed files.
4. Two writers of one corpus at once (``badinputs.concurrent_writers``): two ``avmatch extract`` into one
   folder, ``--concurrent-trials`` times; clean when both exit 0, every clip is there, nothing is left.
Issue 24's cases (family ``trust-ii``: mux into an input folder, offsets and drifts out of bounds, keys
that name files, a run folder with metrics but no checkpoint, option values, a frame stamped at 5 h, a
sparse .npy claiming 4 GiB) run with the trust cases, and two sharded matches of one set at once keeping
their shards in one ``--shard-dir`` (scenario ``two-sharded-matches``).
Exit status 1 if any case is not handled, a resumed job differs, any trust case gives a silent wrong
answer, a traceback or an internal error, or any hostile file takes 1 GiB or more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from avmatch.cli import run_captured  # noqa: E402
from avmatch.testing import badinputs  # noqa: E402

SHORT = {"ok": "ok", "error": "err", "unclear": "UNCLEAR", "crash": "CRASH", "hang": "HANG", "wrong": "WRONG"}


def print_tables(outcomes, details: bool) -> None:
    kinds: dict[str, list] = {}
    for o in outcomes:
        kinds.setdefault(o.case.kind, []).append(o)
    for kind, rows in kinds.items():
        readers = list(dict.fromkeys(o.reader for o in rows))
        cases = list(dict.fromkeys(o.case.name for o in rows))
        cell = {(o.case.name, o.reader): o for o in rows}
        width = max(len(c) for c in cases)
        cols = [max(len(r), 7) for r in readers]
        print(f"\n{kind} ({len(cases)} cases)")
        print(f"  {'case':{width}s}  " + "  ".join(f"{r:{w}s}" for r, w in zip(readers, cols, strict=True)) + "  fault")
        for name in cases:
            case = next(o.case for o in rows if o.case.name == name)
            marks = [SHORT[cell[name, r].outcome] if (name, r) in cell else "-" for r in readers]
            print(f"  {name:{width}s}  " + "  ".join(f"{m:{w}s}" for m, w in zip(marks, cols, strict=True))
                  + f"  {case.fault}")
        if details:
            for o in rows:
                print(f"    {o.case.name} / {o.reader}: {o.outcome} ({o.seconds:.2f} s): {o.detail}")


def crash_runs(work: Path, kills: int) -> list[tuple[str, bool, str]]:
    """Kill-and-rerun of training and extraction against uninterrupted runs: (job, identical, summary)."""
    import torch

    from avmatch.corpus import load_corpus, write_corpus
    from avmatch.features.job import extract
    from avmatch.testing.featuregen import make_feature_corpus
    from avmatch.testing.mediagen import make_clip
    from avmatch.training import TrainConfig, train

    out = []
    epochs = 24
    corpus = make_feature_corpus(40, video_dim=10, audio_dim=6, min_len=5, max_len=10, seed=1)
    write_corpus(corpus, work / "corpus")
    options = {"hidden": 16, "layers": 1, "embed_dim": 8}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the child processes run
    straight = train(load_corpus(work / "corpus"), work / "straight", TrainConfig(
        model="gru", epochs=epochs, batch_size=8, seed=4, patience=99, histograms=False, model_options=options),
        progress=False)
    torch.set_num_threads(threads)
    args = ["--model", "gru", "--epochs", str(epochs), "--batch-size", "8", "--seed", "4", "--patience", "99",
            "--no-histograms", *sum((["--option", f"{k}={v}"] for k, v in options.items()), [])]
    run = badinputs.train_with_kills(work / "corpus", work / "killed", args, kills=kills, seed=11)
    resumed = json.loads((work / "killed" / "metrics.json").read_text())
    worst = max(abs(a["loss"] - b["loss"]) for a, b in zip(straight["history"], resumed["history"], strict=True))
    same = (len(straight["history"]) == len(resumed["history"]) == epochs and worst <= 1e-4
            and all(a["top1"] == b["top1"] for a, b in zip(straight["history"], resumed["history"], strict=True)))
    ordered = run.saved == sorted(set(run.saved))
    out.append(("train (gru, 24 epochs)", same and ordered and not run.unreadable,
                f"{run.kills} kills, {run.runs} runs, {run.seconds:.1f} s; epochs saved in order, none twice: "
                f"{ordered}; partial files read back: {len(run.unreadable)}; top-1 {straight['val_top1']:.3f} vs "
                f"{resumed['val_top1']:.3f}, largest loss difference {worst:.1e}"))

    src = work / "media"
    src.mkdir()
    for i in range(24):
        make_clip(src / f"c{i:02d}.mp4", duration_s=2.0, size=(128, 96), events=(0.2 + 0.04 * i,))
    (src / "broken.mp4").write_bytes(b"not a video" * 100)
    run = badinputs.extract_with_kills(src, work / "extract-killed", kills=kills, seed=5, workers=2)
    extract([src], work / "extract-straight", progress=False)
    diffs = badinputs.same_corpus(work / "extract-straight", work / "extract-killed")
    a = {c.id: c for c in load_corpus(work / "extract-straight").clips}
    worst_x = max(abs(getattr(c, m) - getattr(a[c.id], m)).max() for c in load_corpus(work / "extract-killed").clips
                  for m in ("video", "audio") if getattr(c, m) is not None and c.id in a)
    rewritten = [p for p, t in run.kept.items() if Path(p).stat().st_mtime_ns != t]
    out.append(("extract (24 files, 2 workers)", not diffs and not rewritten and not run.unreadable,
                f"{run.kills} kills, {run.runs} runs, {run.seconds:.1f} s; arrays differing: {len(diffs)} "
                f"(largest difference {worst_x:.1e}); "
                f"finished arrays written again: {len(rewritten)}; partial files read back: {len(run.unreadable)}"))
    return out


PEAK_LIMIT_MIB = 1024.0


def trust_runs(work: Path, details: bool) -> bool:
    """The trust cases (headline: silent wrong answers); prints a table per family and the totals."""
    started = time.perf_counter()
    cases = badinputs.trust_cases(work)
    outcomes = badinputs.run_trust(cases) + badinputs.run_scenarios(badinputs.identity_scenarios(), work / "identity")
    families: dict[str, list] = {}
    for o in outcomes:
        families.setdefault(o.case.family, []).append(o)
    width = max(len(o.case.name) for o in outcomes)
    for family, rows in families.items():
        print(f"\ntrust / {family} ({len(rows)} cases)")
        for o in rows:
            print(f"  {o.case.name:{width}s}  {o.outcome.upper() if o.outcome not in ('ok', 'error') else o.outcome:12s} "
                  f"{o.peak_mib:7.0f} MiB {o.seconds:5.1f} s  {o.case.fault}" + (f"\n      {o.detail}" if details else ""))
    totals = Counter(o.outcome for o in outcomes)
    peak = max(o.peak_mib for o in outcomes)
    heavy = [o for o in outcomes if not o.peak_mib < PEAK_LIMIT_MIB]
    print(f"\nSILENT WRONG ANSWERS: {totals['silent-wrong']}; tracebacks: {totals['traceback']}; internal errors: "
          f"{totals['internal']}; other faults: {totals['wrong'] + totals['hang']}; one-line refusals: {totals['error']}; "
          f"clean answers: {totals['ok']}; of {len(outcomes)} trust cases in {time.perf_counter() - started:.0f} s; "
          f"peak memory of any run {peak:.0f} MiB (limit {PEAK_LIMIT_MIB:.0f})")
    for o in outcomes:
        if o.outcome not in badinputs.HANDLED or o in heavy:
            print(f"  NOT HANDLED {o.case.name}: {o.outcome} ({o.peak_mib:.0f} MiB): {o.detail}")
    return all(o.outcome in badinputs.HANDLED for o in outcomes) and not heavy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="print every reader's message")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per crash-and-resume job")
    parser.add_argument("--keep", type=Path, default=None, help="make the files here and keep them")
    parser.add_argument("--concurrent-trials", type=int, default=20, help="trials of two concurrent writers")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="avmatch-robustness-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        trusted = trust_runs(work / "trust", args.details)
        started = time.perf_counter()
        cases = badinputs.make_cases(work / "cases")
        made_s = time.perf_counter() - started
        outcomes = badinputs.run_all(cases, work / "readers", run_captured)
        run_s = time.perf_counter() - started - made_s
        print_tables(outcomes, args.details)
        totals = Counter(o.outcome for o in outcomes)
        bad = [o for o in outcomes if o.outcome not in badinputs.HANDLED]
        pickled = badinputs.exploit_marker(work / "cases").exists()
        print(f"\nbad inputs: {len(cases)} cases ({made_s:.1f} s to make), {len(outcomes)} reader runs in "
              f"{run_s:.1f} s: " + ", ".join(f"{k} {totals[k]}" for k in SHORT if totals[k]))
        print(f"handled (ok or one clear line): {len(outcomes) - len(bad)} of {len(outcomes)}; "
              f"not handled: {len(bad)}; slowest reader run {max(o.seconds for o in outcomes):.2f} s; "
              f"a pickle was run: {'YES' if pickled else 'no'}")
        for o in bad:
            print(f"  NOT HANDLED {o.case.name} / {o.reader}: {o.outcome}: {o.detail}")

        print("\ncrash and resume (kill -9 at random moments, rerun until done, compare with an uninterrupted run)")
        crash = crash_runs(work / "crash", args.kills)
        for job, same, summary in crash:
            print(f"  {job:30s} {'identical' if same else 'DIFFERENT'}  {summary}")
        print(f"crash-and-resume jobs identical to uninterrupted runs: {sum(s for _, s, _ in crash)} of {len(crash)}")

        started = time.perf_counter()
        both = badinputs.concurrent_writers(work / "concurrent", trials=args.concurrent_trials)
        print(f"\ntwo concurrent writers of one corpus (two `avmatch extract` at once): clean in {both['clean']} of "
              f"{both['trials']} trials ({time.perf_counter() - started:.0f} s)")
        for fault in both["faults"]:
            print(f"  {fault}")
        concurrent_ok = both["clean"] == both["trials"]
        return 0 if trusted and not bad and not pickled and all(s for _, s, _ in crash) and concurrent_ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
