"""Matching at scale: wall time, CPU time, peak memory and accuracy of two-stage matching for N = 1k .. 1M,
stage by stage, against the dense exact matching where it fits. Prints numbers only; asserts nothing about time.

    python benchmarks/scale.py [--sizes 1000,10000,100000] [--dim 128] [--noise 2.0] [--decay 0] [--candidates 10]
                               [--retrieval auto|flat|ivf|ivfpq|hnsw] [--nprobe N] [--exact-sample 10000]
                               [--dense-up-to 10000] [--hubs 0.5] [--norm-n 5000] [--dual 2000] [--embed 100000]
                               [--shards 2 --workers 2] [--query-sample 50000]

    # the 10^6 run of the README:
    python benchmarks/scale.py --sizes 1000000 --dense-up-to 0 --hubs 0 --decay 1 --noise 1.0 --embed 1000000
    # 10^7's first stage (every audio indexed in two shards, 50,000 videos searched; about 20 minutes):
    python benchmarks/scale.py --sizes 10000000 --query-sample 50000 --shards 2 --workers 2 --dense-up-to 0 \
        --hubs 0 --decay 1 --noise 1.0 --exact-sample 2000

Data: synthetic embeddings with a planted matching, video_i a random unit vector in ``--dim``
dimensions (its variance along axis j falling as j^-decay: 0 is isotropic, the worst case for any
index, where no cell holds a query's neighbours; a trained model's embeddings are far from it: the
shipped model's spread over 3 to 6 effective dimensions of 64) and audio_i = normalise(video_i + noise *
g_i / sqrt(dim)), g_i standard normal; the score is 10 * cosine. Every measurement runs in a child
process (a fresh interpreter), so its peak resident memory is its own; "base MiB" is the child's peak
before matching (interpreter, torch, faiss and the embeddings). "CPU s" is user + system time over all
threads: on a machine shared with other work the wall time grows, the CPU time much less.

Printed: for each N, the dense exact matching (where N <= --dense-up-to) and the two-stage one: wall
time, peak memory, one-to-one accuracy against the planted truth, and the two-stage accuracy as a share
of the dense one; then each stage of the two-stage matching (wall, CPU, its own peak memory, what it
chose: the search depth and its recall, the index's bytes a clip), and how often the true partner is
among the retrieved candidates against an exact search's top K on a sample of videos. Then what the
sparse dual softmax gains (on a variant with "hub" audios that lean towards every video, --hubs), and
the floor: one dense N x d by d x N product at N = 10k. ``--embed N`` times a dual model embedding N
clips of each modality from features; ``--dual N`` trains a ``dual`` model on a generated corpus and
matches N clips both ways.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np

job = json.loads(sys.argv[1])
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_SELF))
# with --shards the search runs in Dask worker processes: their CPU time (once they have ended) and the
# largest one's peak are reported beside the run's own
child_cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(resource.RUSAGE_CHILDREN))
child_peak = lambda: resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def planted(n, dim, noise, hubs, seed, decay=0.0, chunk=16384):
    # audio_i = normalise(video_i + noise); with hubs, videos lean along u and some audios further;
    # decay > 0: the videos' variance along axis j falls as j**-decay (trained embeddings are far from isotropic)
    rng = np.random.default_rng(seed)
    spread = np.arange(1, dim + 1, dtype=np.float32) ** (-decay / 2)
    spread *= np.sqrt(dim / (spread ** 2).sum())
    u = rng.standard_normal(dim).astype(np.float32)
    u /= np.linalg.norm(u)
    video, audio = np.empty((n, dim), np.float32), np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        v = rng.standard_normal((m, dim), dtype=np.float32) * spread
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        if hubs:
            v += 0.3 * u
            v /= np.linalg.norm(v, axis=1, keepdims=True)
        a = v + noise * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        if hubs:
            a += hubs * np.abs(rng.standard_normal((m, 1), dtype=np.float32)) * u
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        video[s : s + m], audio[s : s + m] = v, a
    return video, audio


from avmatch.matching import MatchResult, assign, normalise
from avmatch.matching.two_stage import match_embeddings
from avmatch.progress import recording_stages

out = {}
if job["mode"] == "embed":  # a dual model's clip embeddings of n generated feature clips (time and memory only)
    import torch
    from avmatch.checkpoint import load_trained
    from avmatch.inference import clip_embeddings
    trained = load_trained(job["run"])
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((job["rows"], trained.model.config["video_dim"]), dtype=np.float32) for _ in range(job["n"])]
    audios = [rng.standard_normal((job["rows"], trained.model.config["audio_dim"]), dtype=np.float32) for _ in range(job["n"])]
    out["base_mib"] = peak()
    t, c = time.perf_counter(), cpu()
    with recording_stages() as stages:
        clip_embeddings(trained, videos, "video", batch_size=4096)
        clip_embeddings(trained, audios, "audio", batch_size=4096)
    out.update(wall_s=time.perf_counter() - t, cpu_s=cpu() - c, stages=stages,
               peak_mib=max([peak()] + [st["peak_mib"] for st in stages.values()]))
    print(json.dumps(out))
    sys.exit()

video, audio = planted(job["n"], job["dim"], job["noise"], job["hubs"], job["seed"], job["decay"])
if job["mode"] == "sample":  # retrieval only, for a sample of the videos against every audio
    pick = np.sort(np.random.default_rng(1).choice(len(video), job["query_sample"], replace=False))
    video = video[pick]
out["base_mib"] = peak()
options = {"nprobe": job["nprobe"]} if job.get("nprobe") else {}
if job.get("shards"):  # the index cut into shards, each built and searched by a local Dask worker
    options.update(shards=job["shards"], workers=job["workers"], workdir=job.get("shard_dir"))
t, c = time.perf_counter(), cpu()
if job["mode"] == "dense":
    scores = job["scale"] * (video @ audio.T)  # (N, N) float32
    chosen = assign(normalise(scores, job["normalisation"]), job["method"])
elif job["mode"] == "floor":
    for _ in range(3):
        t = time.perf_counter()
        video @ audio.T
        out.setdefault("runs_s", []).append(time.perf_counter() - t)
    chosen = np.zeros(0, np.int64)
elif job["mode"] == "sample":  # the first stage of two-stage matching: DUAL_DEPTH x K by cosine (the dual
    # softmax's key, which needs every video, left out), built and searched as the whole run would be
    from avmatch.matching.two_stage import DUAL_DEPTH, top_k_candidates
    depth = DUAL_DEPTH * job["k"]
    with recording_stages() as stages:
        _, rows = top_k_candidates(video, audio, depth, job["kind"], **options)
    out.update(stages=stages, depth=depth, partner_in_candidates=float((rows == pick[:, None]).any(axis=1).mean()))
    chosen = np.zeros(0, np.int64)
else:
    with recording_stages() as stages:
        scores, raw, chosen = match_embeddings(video, audio, job["k"], job["scale"], 0.0, job["method"],
                                               job["normalisation"], job["kind"], job["outside_sample"], **options)
        if job.get("write"):
            ids = [f"clip{i:08d}" for i in range(job["n"])]
            MatchResult(ids, ids, scores, chosen, job["method"], raw).write(job["write"], heatmap=False)
    out["stages"] = stages
    # the partner among the candidates, and (on a sample of videos) among an exact search's top K
    rows = np.repeat(np.arange(raw.shape[0]), np.diff(raw.indptr))
    out["partner_in_candidates"] = float(np.isin(np.arange(len(video)) * len(audio) + np.arange(len(video)),
                                                 rows.astype(np.int64) * len(audio) + raw.indices).mean())
out["wall_s"] = time.perf_counter() - t
out["cpu_s"] = cpu() - c + child_cpu()
out["workers_peak_mib"] = child_peak()
# a stage resets the peak as it starts (/proc/self/clear_refs), so the run's peak is the largest stage's
out["peak_mib"] = max([peak()] + [st["peak_mib"] for st in out.get("stages", {}).values()])
out["accuracy"] = float((chosen == np.arange(len(chosen))).mean()) if len(chosen) else None
out["unmatched"] = int((chosen < 0).sum())
if job["mode"] in ("two-stage", "sample") and job.get("exact_sample"):
    import faiss
    some = np.sort(np.random.default_rng(1).choice(len(video), min(job["exact_sample"], len(video)), replace=False))
    partner = pick[some] if job["mode"] == "sample" else some
    _, top = faiss.knn(video[some], audio, out.get("depth", job["k"]), faiss.METRIC_INNER_PRODUCT)
    out["exact_sample"] = len(some)
    out["partner_in_exact_top_k"] = float((top == partner[:, None]).any(axis=1).mean())
if job.get("save"):
    np.save(job["save"], chosen)
print(json.dumps(out))
"""


def run_child(job: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"child failed for {job}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_lines(r: dict, indent: str = "          ") -> None:
    """Each recorded stage's wall time, CPU time and peak memory (a stage inside another counts in both)."""
    for name, st in r.get("stages", {}).items():
        notes = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in st.items()
                          if k not in ("wall_s", "cpu_s", "peak_mib", "calls"))
        calls = f"{st['calls']} calls" if st["calls"] > 1 else ""
        print(f"{indent}{name:<28s} {st['wall_s']:8.2f}  {st['cpu_s']:8.2f}  {st['peak_mib']:8.0f}            "
              + "; ".join(x for x in (calls, notes) if x), flush=True)


def job_of(args, n: int, mode: str, **extra) -> dict:
    return {"n": n, "dim": args.dim, "noise": args.noise, "hubs": 0.0, "seed": args.seed, "mode": mode,
            "scale": 10.0, "k": args.candidates, "method": "hungarian", "normalisation": "dual-softmax",
            "kind": args.retrieval, "outside_sample": 1024, "decay": args.decay, "nprobe": args.nprobe,
            "exact_sample": args.exact_sample, "shards": args.shards, "workers": args.workers,
            "shard_dir": args.shard_dir, **extra}


def line(n, what, r, extra=""):
    acc = "" if r.get("accuracy") is None else f"{r['accuracy']:.4f}"
    print(f"{n:>7d}  {what:<28s} {r['wall_s']:8.2f}  {r['cpu_s']:8.2f}  {r['peak_mib']:8.0f}  {r['base_mib']:8.0f}  "
          f"{acc:>8s}  {extra}", flush=True)


def scale_table(args, tmp: str) -> None:
    spectrum = "isotropic" if not args.decay else f"variance along axis j ~ j^-{args.decay:g}"
    print(f"planted matching: d={args.dim}, {spectrum}, noise={args.noise}, score = 10 cos; two-stage: "
          f"K={args.candidates}, {args.retrieval} retrieval, dual softmax with sampled outside mass, Hungarian "
          "(LAPJVsp) + leftovers, pairs.csv written")
    print(f"{'N':>7s}  {'matching':<28s} {'wall s':>8s}  {'CPU s':>8s}  {'peak MiB':>8s}  {'base MiB':>8s}  {'accuracy':>8s}  "
          "vs dense exact")
    for n in args.sizes:
        if args.query_sample and args.query_sample < n:
            sample_line(args, n)
            continue
        dense = None
        if n <= args.dense_up_to:
            dense = run_child(job_of(args, n, "dense", save=f"{tmp}/dense{n}.npy"))
            line(n, "dense exact (Hungarian)", dense)
        two = run_child(job_of(args, n, "two-stage", save=f"{tmp}/two{n}.npy", write=f"{tmp}/pairs{n}.csv"))
        extra = "(dense does not fit)"
        if dense:
            agree = (np.load(f"{tmp}/two{n}.npy") == np.load(f"{tmp}/dense{n}.npy")).mean()
            extra = f"{100 * two['accuracy'] / dense['accuracy']:.2f}% of its accuracy, same pair for {100 * agree:.2f}%"
        if args.shards:
            extra += f"; {args.shards} shards on {args.workers} Dask workers (largest worker's peak {two['workers_peak_mib']:.0f} MiB)"
        line(n, f"two-stage K={args.candidates}", two, extra)
        stage_lines(two)
        exact = ""
        if "partner_in_exact_top_k" in two:
            exact = (f"; in an exact search's top {args.candidates}: {two['partner_in_exact_top_k']:.4f} "
                     f"({two['exact_sample']} videos sampled)")
        print(f"          true partner among the retrieved candidates: {two['partner_in_candidates']:.4f}{exact}; "
              f"unmatched {two['unmatched']}", flush=True)


def sample_line(args, n: int) -> None:
    """Retrieval at a size whose whole run does not fit the session: every audio indexed as the whole
    run would, a sample of the videos searched; the whole search's time projected from the sample's."""
    r = run_child(job_of(args, n, "sample", query_sample=args.query_sample))
    line(n, f"first stage, {args.query_sample} videos", r, f"{r['depth']} candidates by cosine"
         + (f"; {args.shards} shards on {args.workers} Dask workers (largest worker's peak "
            f"{r['workers_peak_mib']:.0f} MiB)" if args.shards else ""))
    stage_lines(r)
    retrieve = next(st for name, st in r["stages"].items() if name.startswith("retrieve"))
    search_s = retrieve.get("shard search_s", retrieve["wall_s"])
    print(f"          true partner among the {r['depth']} candidates: {r['partner_in_candidates']:.4f}; in an exact "
          f"search's top {r['depth']}: {r['partner_in_exact_top_k']:.4f} ({r['exact_sample']} videos sampled); "
          f"all {n} videos searched at the sample's rate: {search_s * n / args.query_sample:.0f} s "
          f"({search_s * n / args.query_sample / 3600:.1f} h) of searching"
          + (" in each shard's worker" if args.shards else ""), flush=True)


def embed_table(args, tmp: str) -> None:
    """The first stage from features: a small dual model embeds N clips of each modality."""
    from pathlib import Path

    from avmatch.testing.featuregen import make_feature_corpus
    from avmatch.training import TrainConfig, train

    dims = {"video_dim": 64, "audio_dim": 32, "min_len": args.embed_rows, "max_len": args.embed_rows}
    train(make_feature_corpus(200, seed=1, **dims), Path(tmp) / "dual", TrainConfig(model="dual", epochs=1,
          batch_size=64, histograms=False), progress=False)
    print(f"\nembedding from features: a dual model (64 | 32 dims in, {args.embed_rows} rows a clip), both modalities")
    for n in args.embed:
        r = run_child(job_of(args, n, "embed", run=str(Path(tmp) / "dual"), rows=args.embed_rows))
        line(n, "embed videos + audios", r, f"{n / r['wall_s']:.0f} clips/s of each modality")
        stage_lines(r)


def normalisation_table(args) -> None:
    n = args.norm_n
    print(f"\nwhat the sparse dual softmax gains: N={n}, with hub audios (--hubs {args.hubs}) and without")
    print(f"{'N':>7s}  {'matching':<28s} {'wall s':>8s}  {'CPU s':>8s}  {'peak MiB':>8s}  {'base MiB':>8s}  {'accuracy':>8s}")
    for hubs in (args.hubs, 0.0):
        for method in ("hungarian", "greedy"):
            for label, mode, norm, sample in (("dense, raw", "dense", "none", 0),
                                              ("dense, dual softmax", "dense", "dual-softmax", 0),
                                              ("two-stage, raw", "two-stage", "none", 0),
                                              ("two-stage, dual sm. cands", "two-stage", "dual-softmax", 0),
                                              ("two-stage, dual sm. +outside", "two-stage", "dual-softmax", 1024)):
                r = run_child(job_of(args, n, mode, hubs=hubs, method=method, normalisation=norm, outside_sample=sample))
                line(n, f"{label}", r, f"{method}, hubs {hubs}")


def floor(args) -> None:
    r = run_child(job_of(args, 10_000, "floor"))
    best = min(r["runs_s"])
    print(f"\nfloor: one dense 10000x{args.dim} @ {args.dim}x10000 float32 product: {best:.3f} s "
          f"(x100 for 100k x 100k: {100 * best:.0f} s)")


def dual_run(args, n: int) -> None:
    """Train ``dual`` on a generated corpus, then match n shuffled test clips densely and two-stage."""
    import tempfile
    from pathlib import Path

    from avmatch.checkpoint import load_trained
    from avmatch.matching import MatchOptions, match_corpora
    from avmatch.testing.featuregen import make_feature_corpus, shuffle_for_matching
    from avmatch.training import TrainConfig, train

    dims = {"video_dim": 64, "audio_dim": 32, "min_len": 8, "max_len": 16}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        train(make_feature_corpus(1500, seed=1, **dims), Path(tmp) / "run",
              TrainConfig(model="dual", epochs=15, batch_size=64, histograms=False), progress=False)
        print(f"\ntrained dual on 1500 generated clips in {time.perf_counter() - t:.0f} s")
        trained = load_trained(Path(tmp) / "run")
        videos, audios, key = shuffle_for_matching(make_feature_corpus(n, seed=2, **dims), seed=3)
        truth = dict(key)
        for mode in ("dense", "two-stage"):
            t = time.perf_counter()
            options = MatchOptions(mode=mode, candidates=args.candidates)
            result = match_corpora(trained, videos, audios, options)
            acc = np.mean([truth[r["video"]] == r["audio"] for r in result.rows()])
            print(f"dual, N={n}, {mode:9s}: {time.perf_counter() - t:6.2f} s, one-to-one accuracy {acc:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--noise", type=float, default=2.0)
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--retrieval", default="auto", choices=["auto", "flat", "ivf", "ivfpq", "hnsw"])
    p.add_argument("--dense-up-to", type=int, default=10_000, help="largest N also matched densely")
    p.add_argument("--hubs", type=float, default=0.5, help="hub strength of the normalisation comparison (0: skip it)")
    p.add_argument("--norm-n", type=int, default=5000, help="N of the normalisation comparison")
    p.add_argument("--dual", type=int, default=0, metavar="N", help="also match N clips with a trained dual model")
    p.add_argument("--decay", type=float, default=0.0,
                   help="planted videos' variance along axis j falls as j**-DECAY (0: isotropic, the worst case "
                        "for an index; a trained model's embeddings are far from isotropic)")
    p.add_argument("--shards", type=int, default=0,
                   help="two-stage retrieval from this many index shards searched by local Dask workers (0: one index)")
    p.add_argument("--workers", type=int, default=2, help="with --shards: the local Dask workers")
    p.add_argument("--shard-dir", default=None,
                   help="with --shards: keep the shards' indexes, marked progress and answers here; the same command "
                        "run again after a kill goes on from them (kept shards' seconds are the first run's)")
    p.add_argument("--nprobe", type=int, default=0, help="IVF cells searched (0: tuned for the recall target)")
    p.add_argument("--exact-sample", type=int, default=10_000,
                   help="videos whose exact top K is searched to compare with the retrieved candidates")
    p.add_argument("--query-sample", type=int, default=0, metavar="Q",
                   help="at sizes above Q: only the first stage, every audio indexed and Q sampled videos searched, "
                        "the whole search's time projected from theirs (a size whose whole run does not fit)")
    p.add_argument("--embed", default="", help="also time embedding N clips from features, e.g. 100000,1000000")
    p.add_argument("--embed-rows", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    import os
    import tempfile

    print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    args.embed = [int(s) for s in args.embed.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        scale_table(args, tmp)
        if args.embed:
            embed_table(args, tmp)
    if args.hubs:
        normalisation_table(args)
    floor(args)
    if args.dual:
        dual_run(args, args.dual)


if __name__ == "__main__":
    main()
