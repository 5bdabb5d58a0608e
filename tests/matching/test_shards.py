"""Sharded retrieval on a real Dask cluster: a scheduler and two worker processes started here and
reached over TCP, whose merged answer must equal one machine's."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from avmatch.errors import AvmatchError
from avmatch.matching.index import build_index, search
from avmatch.matching.shards import sharded_top_k
from avmatch.matching.two_stage import match_embeddings

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """tcp://127.0.0.1:PORT of a `dask scheduler` with two `dask worker` processes of one thread each."""
    folder = tmp_path_factory.mktemp("dask")
    file = folder / "scheduler.json"
    cli = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [subprocess.Popen([*cli, "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(600):
            if file.exists() and file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(file.read_text())["address"]
        assert address.startswith("tcp://")
        procs += [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                    "--nworkers", "1", "--no-dashboard", "--local-directory", str(folder / f"w{w}")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for w in range(2)]
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def planted(n, dim=16, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    video = rng.standard_normal((n, dim)).astype(np.float32)
    video /= np.linalg.norm(video, axis=1, keepdims=True)
    audio = video + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    return video, audio.astype(np.float32)


def test_sharded_exact_search_equals_one_index(scheduler):
    video, audio = planted(3000)
    sims, rows, records = sharded_top_k(video, audio, 10, "flat", shards=3, cluster=scheduler)
    want_sims, want_rows = search(build_index(audio, "flat"), video, 10)
    assert [r["rows"] for r in records] == [1000, 1000, 1000]
    assert all(r["queries"] == 3000 and min(r["build_s"], r["tune_s"], r["search_s"]) >= 0 for r in records)
    assert np.allclose(sims, want_sims, atol=1e-5)
    assert (rows == want_rows).mean() > 0.999  # only float ties may swap
    assert set(np.unique(rows)) <= set(range(3000)) and (rows // 1000 != 0).any()  # rows of every shard, numbered globally


def test_sharded_matching_equals_one_machine(scheduler):
    video, audio = planted(4000, dim=64, noise=1.5)
    one = match_embeddings(video, audio, k=10, scale=10.0)[2]
    sharded = match_embeddings(video, audio, k=10, scale=10.0, shards=4, cluster=scheduler)[2]
    assert (one == np.arange(4000)).mean() > 0.8  # a task with something to get wrong
    assert (sharded == one).all()
    approximate = match_embeddings(video, audio, k=10, scale=10.0, kind="ivf", shards=2, cluster=scheduler)[2]
    assert (approximate == np.arange(4000)).mean() >= 0.98 * (one == np.arange(4000)).mean()


def test_a_sharded_search_cut_short_resumes_with_the_shards_it_had_finished(scheduler, tmp_path, monkeypatch):
    """With a folder to keep them in, the shards that finished before a crash are not searched again
    (one whose answer is no longer whole is); other inputs are another job; a second run of the same job at once is refused; the folder goes
    once the answer is merged."""
    import fcntl

    from avmatch.matching import shards

    video, audio = planted(3000)
    want_sims, want_rows = search(build_index(audio, "flat"), video, 10)
    merge = shards._merge
    monkeypatch.setattr(shards, "_merge", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))  # killed at the end
    with pytest.raises(KeyboardInterrupt):
        sharded_top_k(video, audio, 10, "flat", shards=3, cluster=scheduler, workdir=tmp_path)
    monkeypatch.setattr(shards, "_merge", merge)
    (job,) = tmp_path.glob("avmatch-shards-*")
    assert sorted(p.name for p in job.glob("shard*.json")) == ["shard0.json", "shard1.json", "shard2.json"]
    (job / "shard1.json").unlink()  # as if the run had died while shard 1 was being searched
    with open(job / "shard2.rows.npy", "r+b") as f:  # and shard 2's answer were cut short since
        f.truncate(1000)

    with open(job / "lock", "w") as lock:  # a run of the same job going on
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(AvmatchError, match="another run is searching these shards"):
            sharded_top_k(video, audio, 10, "flat", shards=3, cluster=scheduler, workdir=tmp_path)

    other = audio[::-1].copy()  # other inputs: another job, nothing of this one taken
    got = sharded_top_k(video, other, 10, "flat", shards=3, cluster=scheduler, workdir=tmp_path)
    assert not any(r.get("kept") for r in got[2]) and np.allclose(got[0], search(build_index(other, "flat"), video, 10)[0], atol=1e-5)

    sims, rows, records = sharded_top_k(video, audio, 10, "flat", shards=3, cluster=scheduler, workdir=tmp_path)
    assert [bool(r.get("kept")) for r in records] == [True, False, False]  # only shards 1 and 2 searched again
    assert np.allclose(sims, want_sims, atol=1e-5) and (rows == want_rows).mean() > 0.999
    assert list(tmp_path.iterdir()) == []  # both jobs merged: their folders removed


def test_a_shard_cut_short_goes_on_from_its_last_mark(tmp_path, monkeypatch, killed_on_call):
    """One shard's task killed in its search: run again, it reads back its index and its partial answer
    and searches only the queries past the last mark; the answer is the uninterrupted one."""
    from avmatch.matching import shards

    video, audio = planted(3000)
    for folder in (tmp_path / "cut", tmp_path / "whole"):
        folder.mkdir()
        np.save(folder / "base.npy", audio)
        np.save(folder / "queries.npy", video)
        np.savez(folder / "tune.npz", **shards._tuning_sample(video, audio, False))
    monkeypatch.setattr(shards, "SEARCH_ROWS", 500)  # six chunks, a mark every two
    monkeypatch.setattr(shards, "SAVE_EVERY", 2)
    want = shards.search_shard(str(tmp_path / "whole"), 0, 1000, 3000, 10, "ivf", {"nlist": 16})
    calls = killed_on_call(shards, "search", 5)  # in the fifth chunk
    with pytest.raises(KeyboardInterrupt):
        shards.search_shard(str(tmp_path / "cut"), 0, 1000, 3000, 10, "ivf", {"nlist": 16})
    assert json.loads((tmp_path / "cut" / "shard0.part.json").read_text())["done"] == 2000
    assert (tmp_path / "cut" / "shard0.faiss").exists()
    calls.clear()
    monkeypatch.setattr(shards, "build_index", lambda *a, **kw: pytest.fail("the saved index was built again"))
    got = shards.search_shard(str(tmp_path / "cut"), 0, 1000, 3000, 10, "ivf", {"nlist": 16})
    assert len(calls) == 2  # chunks 2000..3000 only
    for name in ("sims", "rows"):
        assert np.array_equal(np.load(tmp_path / "cut" / f"shard0.{name}.npy"), np.load(tmp_path / "whole" / f"shard0.{name}.npy"))
    assert got["nprobe"] == want["nprobe"] and got["rows"] == 2000 and got["queries"] == 3000
    assert sorted(p.name for p in (tmp_path / "cut").glob("shard0*")) == ["shard0.json", "shard0.rows.npy", "shard0.sims.npy"]


def test_shards_are_checked_and_an_unreachable_scheduler_is_one_line():
    video, audio = planted(50)
    with pytest.raises(AvmatchError, match="--shards 51: give 1 to 50"):
        sharded_top_k(video, audio, 5, shards=51, cluster="tcp://127.0.0.1:1")
    from avmatch import cluster

    cluster.CONNECT_TIMEOUT_S, was = 2, cluster.CONNECT_TIMEOUT_S
    try:
        with pytest.raises(AvmatchError, match="cannot reach the Dask scheduler"):
            sharded_top_k(video, audio, 5, shards=2, cluster="tcp://127.0.0.1:1")
    finally:
        cluster.CONNECT_TIMEOUT_S = was


def test_cli_match_with_shards_on_the_cluster_writes_the_one_machine_pairs(scheduler, tmp_path, capsys):
    from avmatch.cli import main
    from avmatch.testing.badinputs import dual_matching_set

    data = dual_matching_set(tmp_path)
    common = [*data, "--mode", "two-stage", "--adapt", "0", "--no-heatmap"]
    assert main(["match", *common, "-o", str(tmp_path / "one.csv")]) == 0
    assert main(["match", *common, "-o", str(tmp_path / "sharded.csv"), "--shards", "3", "--cluster", scheduler]) == 0
    assert (tmp_path / "sharded.csv").read_text() == (tmp_path / "one.csv").read_text()
    capsys.readouterr()
    dense = [*data, "-o", str(tmp_path / "d.csv")]
    assert main(["match", *dense, "--shards", "2"]) == 2  # 300 x 300 pairs: dense, no index to cut
    assert "cut the index of two-stage matching" in capsys.readouterr().err
    assert main(["match", *common, "-o", str(tmp_path / "c.csv"), "--cluster", scheduler]) == 2
    assert "give their number with --shards" in capsys.readouterr().err
    assert main(["match", *common, "-o", str(tmp_path / "c.csv"), "--shard-dir", str(tmp_path / "keep")]) == 2
    assert "--shard-dir is for the index's shards" in capsys.readouterr().err
    kept = ["--shards", "3", "--cluster", scheduler, "--shard-dir", str(tmp_path / "keep")]
    assert main(["match", *common, "-o", str(tmp_path / "kept.csv"), *kept]) == 0
    assert (tmp_path / "kept.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert list((tmp_path / "keep").iterdir()) == []
