"""Distributed training: 2 gloo processes on CPU follow the 1-process run on the same global batches."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from avmatch.cli import main
from avmatch.corpus import write_corpus
from avmatch.testing.featuregen import make_feature_corpus

# 21 training clips in global batches of 8: 8, 8, 5, so the last batch splits unevenly (3 + 2)
TRAIN = ["--epochs", "2", "--batch-size", "8", "--no-histograms", "--option", "hidden=16", "--option", "dropout=0"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "corpus"
    write_corpus(make_feature_corpus(24, video_dim=8, audio_dim=6, min_len=4, max_len=8, seed=1), path)
    return path


def _run(argv: list[str], folder: Path, limit: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    # Output goes to files, not pipes: torchrun starts each worker in a session of its own, so a worker
    # outliving a killed parent would hold a pipe open and reading it would wait for ever (this hung CI).
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, *argv], env=env, stdout=out, stderr=err)
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _end_tree(proc.pid)
            proc.wait()
            raise AssertionError(f"{' '.join(argv[:4])} ran past {limit:.0f} s; where each process "
                                 f"waited:\n{err_path.read_text()[-6000:]}") from None
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out_path.read_text(), err_path.read_text())
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _end_tree(pid: int) -> None:
    """Stop a process and every process under it, whatever session they moved to: SIGABRT first, so
    that faulthandler (PYTHONFAULTHANDLER) prints where each one was waiting, then SIGKILL."""
    root = psutil.Process(pid)
    tree = [*root.children(recursive=True), root]
    for sig in (signal.SIGABRT, signal.SIGKILL):
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
        psutil.wait_procs(tree, timeout=5)


def _history(run) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["history"]


def _weights(run) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["state_dict"]


def test_torchrun_two_processes_match_one(corpus_dir, tmp_path):
    args = [str(corpus_dir), "--model", "dual", "--option", "embed_dim=8", *TRAIN]
    assert main(["train", *args, "-o", str(tmp_path / "one")]) == 0
    done = _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                 "-m", "avmatch", "train", *args, "-o", str(tmp_path / "two")], tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert done.stdout.count("best validation top-1") == 1  # rank 0 speaks, rank 0 writes
    assert len(list((two / "tb").glob("events.out.tfevents.*"))) == 1
    assert json.loads((two / "config.json").read_text())["processes"] == 2
    for a, b in zip(_history(one), _history(two), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
        assert b["top1"] == a["top1"] and b["mrr"] == pytest.approx(a["mrr"], rel=1e-3)
    w1, w2 = _weights(one), _weights(two)
    # InfoNCE does not depend on the logit bias (a constant shift of every logit): its true gradient is 0
    # and Adam turns the rounding noise of either run into steps of its own, so it is left out
    for name in set(w1) - {"logit_bias"}:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-3, atol=1e-5, msg=name)


def test_ddp_option_with_a_pair_loss_matches_one_process(corpus_dir, tmp_path):
    # va-metric: contrastive loss on pairs, negatives drawn from the whole global batch
    args = [str(corpus_dir), "--model", "va-metric", *TRAIN]
    assert main(["train", *args, "-o", str(tmp_path / "one")]) == 0
    _run(["-m", "avmatch", "train", *args, "-o", str(tmp_path / "two"), "--ddp", "2"], tmp_path)
    for a, b in zip(_history(tmp_path / "one"), _history(tmp_path / "two"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
        assert b["top1"] == a["top1"]
