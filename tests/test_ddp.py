"""Distributed training: 2 gloo processes on CPU follow the 1-process run on the same global batches."""

import json
import os
import signal
import subprocess
import sys

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


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    # a session of its own: past the time limit the whole group goes (torchrun's workers too, which a
    # plain timeout left hanging for hours after a run that failed under load)
    proc = subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(argv[:4])} ran past 180 s: {err[-3000:]}") from None
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _history(run) -> list[dict]:
    return json.loads((run / "metrics.json").read_text())["history"]


def _weights(run) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["state_dict"]


def test_torchrun_two_processes_match_one(corpus_dir, tmp_path):
    args = [str(corpus_dir), "--model", "dual", "--option", "embed_dim=8", *TRAIN]
    assert main(["train", *args, "-o", str(tmp_path / "one")]) == 0
    done = _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                 "-m", "avmatch", "train", *args, "-o", str(tmp_path / "two")])
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
    _run(["-m", "avmatch", "train", *args, "-o", str(tmp_path / "two"), "--ddp", "2"])
    for a, b in zip(_history(tmp_path / "one"), _history(tmp_path / "two"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
        assert b["top1"] == a["top1"]
