"""``avmatch extract``: a batch of real media files into a corpus, bad files reported, killed runs resumed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avmatch.cli import main
from avmatch.corpus import load_corpus, read_manifest
from avmatch.errors import AvmatchError
from avmatch.features.job import extract
from avmatch.testing.mediagen import make_audio, make_clip


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """Three good clips, a silent video, an audio file, and every kind of bad file."""
    root = tmp_path_factory.mktemp("batch")
    for i in range(3):
        make_clip(root / f"good{i}.mp4", duration_s=1.0, events=(0.2 + 0.1 * i,))
    (root / "sub").mkdir()
    make_clip(root / "sub" / "silent.mp4", duration_s=1.0, with_audio=False)
    make_audio(root / "voice.wav", duration_s=1.0)
    (root / "zero.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video, just text\n" * 40)
    good = (root / "good0.mp4").read_bytes()
    (root / "corrupt.mkv").write_bytes(good[:200] + bytes(range(256)) * 40)
    make_clip(root / "noaudio.m4a", duration_s=1.0, with_audio=False)  # an "audio" file holding only video
    return root


def failed_rows(corpus: Path) -> dict[str, str]:
    with open(corpus / "failed.csv", newline="") as f:
        return {Path(r["file"]).name: r["reason"] for r in csv.DictReader(f)}


def test_batch_reports_bad_files_and_finishes(batch, tmp_path):
    summary = extract([batch], tmp_path / "c", progress=False)
    assert summary.done == 5 and len(summary.failed) == 4
    reasons = failed_rows(tmp_path / "c")
    assert set(reasons) == {"zero.mp4", "notes.mp4", "corrupt.mkv", "noaudio.m4a"}
    assert "empty" in reasons["zero.mp4"]
    assert "not a readable media file" in reasons["notes.mp4"]
    assert "no audio stream" in reasons["noaudio.m4a"]
    assert all(r and "\n" not in r for r in reasons.values())
    corpus = load_corpus(tmp_path / "c")
    kinds = {c.id: (c.video is not None, c.audio is not None) for c in corpus.clips}
    assert kinds == {"good0": (True, True), "good1": (True, True), "good2": (True, True),
                     "sub/silent": (True, False), "voice": (False, True)}
    assert corpus.video_rate_hz == corpus.audio_rate_hz == 25.0
    assert corpus.extractor["name"] == "default" and corpus.extractor["params"]["fps"] == 25.0
    # a rerun redoes nothing and still reports the bad files
    again = extract([batch], tmp_path / "c", progress=False)
    assert again.done == 0 and again.skipped == 5 and len(again.failed) == 4


def test_dead_worker_processes_stop_the_batch_with_one_line_not_a_failure_per_file(batch, tmp_path, monkeypatch):
    """A pool whose workers died (killed, out of memory, a script without a main guard) is no fault of
    the files: one error that says so, not every file listed as failed."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    class DeadPool:  # what ProcessPoolExecutor gives once its workers are gone
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, *a, **k):
            fut = Future()
            fut.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
            return fut

    import avmatch.media

    monkeypatch.setattr(avmatch.media, "process_pool", DeadPool)  # the pool extraction's workers run in
    with pytest.raises(AvmatchError, match="worker processes died.*rerun resumes"):
        extract([batch], tmp_path / "c", workers=2, progress=False)
    assert not (tmp_path / "c" / "failed.csv").exists() or not failed_rows(tmp_path / "c")


def test_paired_training_folder_rejects_single_stream_files(batch, tmp_path):
    summary = extract([batch], tmp_path / "p", paired=True, progress=False)
    reasons = failed_rows(tmp_path / "p")
    assert "no audio stream; a training clip needs both" in reasons["silent.mp4"]
    assert "no video stream" in reasons["voice.wav"]
    assert summary.done == 3


def test_another_extractor_cannot_mix_into_a_corpus(batch, tmp_path):
    extract([batch / "good0.mp4"], tmp_path / "c", progress=False)
    with pytest.raises(AvmatchError, match="made with extractor 'default'"):
        extract([batch / "good1.mp4"], tmp_path / "c", "classic", progress=False)


def test_cli_extract_summary_and_missing_source(batch, tmp_path, capsys):
    assert main(["extract", str(batch / "good0.mp4"), str(batch / "voice.wav"), "-o", str(tmp_path / "c"),
                 "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "extracted 2 files" in out and "0 failed" in out
    assert main(["extract", str(tmp_path / "nothing"), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such file or folder" in err


def test_killed_extraction_resumes_without_redoing_work(tmp_path):
    src = tmp_path / "media"
    src.mkdir()
    for i in range(14):
        make_clip(src / f"c{i:02d}.mp4", duration_s=2.0, size=(160, 120), events=(0.3 + 0.05 * i,))
    out = tmp_path / "corpus"
    cmd = [sys.executable, "-m", "avmatch", "extract", str(src), "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    manifest = out / "manifest.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 6:  # three files done
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {r["source"] for r in read_manifest(out)}
    assert 3 <= len(done_before) < 14, "the run should be killed part way"
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "arrays").glob("*.npy")}
    summary = extract([src], out, progress=False)
    assert summary.skipped >= len(done_before) and summary.done + summary.skipped == 14 and not summary.failed
    for p, t in mtimes.items():  # nothing already done was written again
        if p.exists() and any(Path(s).stem in p.name for s in done_before):
            assert p.stat().st_mtime_ns == t
    corpus = load_corpus(out)
    assert len(corpus.clips) == 14 and all(c.video is not None and c.audio is not None for c in corpus.clips)
    assert not list(out.glob("**/.*.tmp*"))  # no temporary file left behind


def test_dask_cluster_gives_the_same_corpus(batch, tmp_path):
    pytest.importorskip("dask.distributed")
    local = extract([batch], tmp_path / "local", progress=False)
    on_cluster = extract([batch], tmp_path / "cluster", progress=False, cluster="", workers=2)
    assert (on_cluster.done, sorted(on_cluster.failed)) == (local.done, sorted(local.failed))
    assert failed_rows(tmp_path / "cluster") == failed_rows(tmp_path / "local")
    a, b = load_corpus(tmp_path / "local"), load_corpus(tmp_path / "cluster")
    assert sorted(c.id for c in a.clips) == sorted(c.id for c in b.clips)
    by_id = {c.id: c for c in b.clips}
    for clip in a.clips:
        for m in ("video", "audio"):
            x, y = getattr(clip, m), getattr(by_id[clip.id], m)
            assert (x is None and y is None) or (x == y).all()
    again = extract([batch], tmp_path / "cluster", progress=False, cluster="", workers=2)
    assert again.done == 0 and again.skipped == local.done  # resumable like the local path


def test_unreachable_scheduler_is_one_line(batch, tmp_path, monkeypatch):
    pytest.importorskip("dask.distributed")
    from avmatch import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(AvmatchError, match="cannot reach the Dask scheduler"):
        extract([batch / "good0.mp4"], tmp_path / "c", progress=False, cluster="tcp://127.0.0.1:9")


def test_corpus_of_an_older_avmatch_loads_and_is_verified_once(batch, tmp_path):
    """Rows without a content identity (and with the source as it was typed) still load; a resume
    cannot trust them, so it extracts those files once and records their identity."""
    import json

    out = tmp_path / "c"
    extract([batch / "good0.mp4", batch / "voice.wav"], out, progress=False)
    manifest = out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    old = [{k: v for k, v in r.items() if k != "source_id"} | {"source": os.path.relpath(r["source"])} for r in rows]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in old))
    assert sorted(c.id for c in load_corpus(out).clips) == ["good0", "voice"]
    summary = extract([batch / "good0.mp4", batch / "voice.wav"], out, progress=False)
    assert (summary.done, len(summary.unverified), summary.skipped) == (2, 2, 0)
    assert "without a content identity" in summary.line()
    again = extract([batch / "good0.mp4", batch / "voice.wav"], out, progress=False)
    assert (again.done, again.skipped) == (0, 2)
    assert sorted(c.id for c in load_corpus(out).clips) == ["good0", "voice"]
