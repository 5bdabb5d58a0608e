"""Load: matching 2,000 x 2,000 clips and extracting 500 short files in one run keep memory bounded and
leak no file handles (the process's open descriptors are counted before and after)."""

from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import torch

from avmatch.checkpoint import Trained
from avmatch.corpus import Clip, Corpus, load_corpus
from avmatch.features.job import extract
from avmatch.matching import match_corpora
from avmatch.models import build_model
from avmatch.testing.mediagen import make_clip

MiB = 1 << 20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_matching_2000_by_2000_is_bounded():
    n = 2000
    torch.manual_seed(0)
    model = build_model("dual", 8, 6, hidden=16, embed_dim=8, blocks=1)
    trained = Trained(model, np.zeros(8, np.float32), np.ones(8, np.float32), np.zeros(6, np.float32),
                      np.ones(6, np.float32))
    rng = np.random.default_rng(0)
    videos = Corpus([Clip(f"v{i}", video=rng.standard_normal((int(rng.integers(4, 9)), 8)).astype(np.float32))
                     for i in range(n)])
    audios = Corpus([Clip(f"a{i}", audio=rng.standard_normal((int(rng.integers(4, 9)), 6)).astype(np.float32))
                     for i in range(n)])
    fds = open_fds()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = match_corpora(trained, videos, audios)
        rows = result.rows()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - started
    chosen = result.chosen
    assert len(rows) == n and sorted(chosen.tolist()) == list(range(n))  # a full one-to-one matching
    # the n x n float64 matrix is 32 MB; the whole match may hold a few of them, not one per pair
    assert peak < 12 * n * n * 8, f"peak {peak / MiB:.0f} MiB"
    assert open_fds() == fds
    print(f"match {n}x{n}: {seconds:.1f} s, numpy peak {peak / MiB:.0f} MiB")


def test_extracting_500_short_files_leaks_nothing(tmp_path):
    src = tmp_path / "media"
    src.mkdir()
    n = 500
    started = time.perf_counter()
    for i in range(n):
        make_clip(src / f"m{i:03d}.mp4", duration_s=0.2, size=(32, 32), events=(0.04,), sample_rate=16000,
                  channels=1, noise=False)
    made_s = time.perf_counter() - started
    fds, rss = open_fds(), rss_bytes()
    started = time.perf_counter()
    summary = extract([src], tmp_path / "corpus", progress=False)
    seconds = time.perf_counter() - started
    assert summary.done == n and not summary.failed
    assert open_fds() == fds, "file handles leaked"
    grown = rss_bytes() - rss  # one file at a time: nothing accumulates per file
    assert grown < 200 * MiB, f"resident memory grew {grown / MiB:.0f} MiB"
    corpus = load_corpus(tmp_path / "corpus")
    assert len(corpus.clips) == n and open_fds() == fds
    print(f"made {n} files in {made_s:.1f} s; extracted in {seconds:.1f} s; RSS grew {grown / MiB:.0f} MiB")
