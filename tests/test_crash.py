"""Crash safety: ``kill -9`` at random moments during ``avmatch train`` and ``avmatch extract``, then
rerun. The job completes, nothing finished is redone, no partial file is ever read back, and the
result equals that of an uninterrupted run (``badinputs.train_with_kills`` / ``extract_with_kills``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avmatch.corpus import append_clip, load_corpus, read_manifest, write_corpus
from avmatch.features.job import extract
from avmatch.testing.badinputs import extract_with_kills, same_corpus, train_with_kills
from avmatch.testing.featuregen import make_feature_corpus
from avmatch.testing.mediagen import make_clip
from avmatch.training import TrainConfig, train

EPOCHS = 16
TRAIN_ARGS = ["--model", "gru", "--epochs", str(EPOCHS), "--batch-size", "8", "--seed", "4", "--patience", "99",
              "--no-histograms", "--option", "hidden=16", "--option", "layers=1", "--option", "embed_dim=8"]


def test_training_killed_at_random_moments_resumes_to_the_same_metrics(tmp_path):
    corpus = make_feature_corpus(40, video_dim=10, audio_dim=6, min_len=5, max_len=10, seed=1)
    write_corpus(corpus, tmp_path / "corpus")
    config = TrainConfig(model="gru", epochs=EPOCHS, batch_size=8, seed=4, patience=99, histograms=False,
                         model_options={"hidden": 16, "layers": 1, "embed_dim": 8})
    straight = train(load_corpus(tmp_path / "corpus"), tmp_path / "straight", config, progress=False)

    run = train_with_kills(tmp_path / "corpus", tmp_path / "killed", TRAIN_ARGS, kills=3, seed=11)
    assert run.kills >= 2, run
    assert not run.unreadable, run.unreadable  # every last.pt read back mid-run was whole
    # epochs saved in order, none saved twice: a resumed run starts after the last finished epoch
    assert run.saved == sorted(set(run.saved)) and run.saved[-1] == EPOCHS, run.saved
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert resumed["epochs"] == straight["epochs"] == EPOCHS
    for a, b in zip(straight["history"], resumed["history"], strict=True):
        assert a["epoch"] == b["epoch"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["top1"] == pytest.approx(b["top1"]) and a["mrr"] == pytest.approx(b["mrr"], rel=1e-4)
    assert resumed["val_top1"] == pytest.approx(straight["val_top1"])
    for name in ("best.pt", "last.pt"):  # both load, with the schema check
        torch.load(tmp_path / "killed" / name, weights_only=True)


def test_extraction_killed_at_random_moments_completes_without_redoing_work(tmp_path):
    src = tmp_path / "media"
    src.mkdir()
    for i in range(24):  # enough that a run is still going when its planned kill comes
        make_clip(src / f"c{i:02d}.mp4", duration_s=2.0, size=(128, 96), events=(0.2 + 0.05 * i,))
    (src / "broken.mp4").write_bytes(b"not a video at all" * 50)
    run = extract_with_kills(src, tmp_path / "killed", kills=2, seed=5, workers=2)
    assert run.kills >= 2 and run.saved[-1] == 24, run
    assert not run.unreadable, run.unreadable  # manifest and arrays were whole at every look
    for path, mtime in run.kept.items():  # nothing finished was written again
        assert Path(path).stat().st_mtime_ns == mtime, path
    extract([src], tmp_path / "straight", progress=False)
    assert same_corpus(tmp_path / "straight", tmp_path / "killed") == []  # to 1e-5
    assert "broken.mp4" in (tmp_path / "killed" / "failed.csv").read_text()
    assert not list((tmp_path / "killed").glob("**/.*.tmp*"))


def test_extraction_removes_the_temporary_files_a_killed_writer_left(tmp_path):
    """A kill between mkstemp and rename leaves ``.NAME.xxxx.tmpSUFFIX`` beside corpus.json, the
    manifest or an array (CI once found one beside corpus.json after the random kills above)."""
    src = tmp_path / "media"
    src.mkdir()
    make_clip(src / "a.mp4", duration_s=1.0, size=(64, 48), events=(0.3,))
    out = tmp_path / "c"
    (out / "arrays").mkdir(parents=True)
    left = [out / ".corpus.json.k1.tmp.json", out / ".manifest.jsonl.k2.tmp.jsonl", out / "arrays" / ".x.npy.k3.tmp.npy"]
    for path in left:
        path.write_text("half")
    extract([src], out, progress=False)
    assert not list(out.glob("**/.*.tmp*")) and [c.id for c in load_corpus(out).clips] == ["a"]


def test_a_torn_manifest_line_is_cut_before_the_next_append(tmp_path):
    """A writer killed mid-line leaves a torn last line; the next append must not glue its row onto it
    (that would make a bad line in the middle of the file, which readers refuse)."""
    root = tmp_path / "c"
    append_clip(root, "a", {"video": np.ones((3, 2))}, rates_hz={"video": 25.0, "audio": 25.0}, source="a.mp4")
    with open(root / "manifest.jsonl", "a") as f:
        f.write('{"clip": "b", "modality": "vid')
    append_clip(root, "c", {"video": np.zeros((3, 2))}, rates_hz={"video": 25.0, "audio": 25.0}, source="c.mp4")
    assert [r["clip"] for r in read_manifest(root)] == ["a", "c"]
    assert [c.id for c in load_corpus(root).clips] == ["a", "c"]


def test_a_concurrent_writers_live_temporaries_are_left_alone(tmp_path):
    """Two writers of one corpus or cache: one's start-up sweep removes only what an *ended* writer
    left, never the other's live temporaries (a sweep that did killed the other run, 1 trial in 3)."""
    import subprocess
    import sys

    from avmatch.atomic import _owner, atomic_path, remove_stale_temps_in

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    try:
        mine, theirs = _owner(), _owner().rsplit("p", 1)[0]
        live = tmp_path / f".manifest.jsonl.{theirs}p{alive.pid}.abcd1234.tmp.jsonl"
        dead = tmp_path / f".corpus.json.{theirs}p{ended.pid}.abcd1234.tmp.json"
        other_host = tmp_path / f".x.npy.00000000p{ended.pid}.abcd1234.tmp.npy"
        for path in (live, dead, other_host):
            path.write_text("half")
        with atomic_path(tmp_path / "out.txt") as own:
            assert mine in own.name
            own.write_text("whole")
            remove_stale_temps_in(tmp_path)  # this process's own live file stays too
            assert own.exists()
        assert live.exists() and other_host.exists() and not dead.exists()
        assert (tmp_path / "out.txt").read_text() == "whole"
    finally:
        alive.kill()
        alive.wait()
