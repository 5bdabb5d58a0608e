"""``avmatch demo`` end to end on real (generated) media, at a size a test can afford."""

import csv
import json

import numpy as np
import pytest

from avmatch.cli import main
from avmatch.demo import DemoConfig, motion_onset_scores, run_demo
from avmatch.errors import AvmatchError

# short clips, small offsets, a small new model trained for many short epochs
TINY = DemoConfig(n_train=240, init="none", n_test=16, duration_s=2.5, max_offset_s=0.4, epochs=30, batch_size=16, lr=5e-3,
                  window_s=0.0, patience=30, model_options={"max_lag": 14, "hidden": 32, "embed_dim": 32, "init_scale": 30.0})


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out, seed=2, config=TINY, progress=False)


def test_demo_writes_what_it_promises(demo):
    out, result = demo
    for name in ("pairs.csv", "pairs.heatmap.png", "report.html", "demo.json", "key.csv", "run/best.pt"):
        assert (out / name).is_file(), name
    assert len(list((out / "media" / "test" / "videos").glob("*.mp4"))) == TINY.n_test
    audios = list((out / "media" / "test" / "audios").iterdir())
    assert len(audios) == TINY.n_test and {a.suffix for a in audios} == {".wav", ".flac", ".mp3", ".m4a", ".opus"}
    saved = json.loads((out / "demo.json").read_text())
    assert saved["summary"]["test pairs"] == TINY.n_test
    import avmatch

    assert saved["summary"]["avmatch"] == avmatch.__version__ and saved["summary"]["extractor"] == "default"
    assert set(saved["stage_seconds"]) >= {"generate", "extract", "train", "match", "total"}
    rows = list(csv.DictReader(open(out / "pairs.csv")))
    assert len(rows) == TINY.n_test and len({r["audio"] for r in rows}) == TINY.n_test  # one-to-one
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and page.count("<tr") >= TINY.n_test + 2
    assert page.count('href="#cell-') == page.count('class="cell" id="cell-') == TINY.n_test  # rows -> the map
    for r in rows:
        assert r["video"] in page


def test_demo_reports_unseen_families_and_formats_apart(demo):
    out, result = demo
    saved = json.loads((out / "demo.json").read_text())
    assert set(saved["held_out"]) <= set(saved["families"]) and {f.split(":")[0] for f in saved["families"]} == {"scenes", "worlds"}
    trained_on = {json.loads(line)["family"] for p in (out / "media" / "train").rglob("scenes.jsonl")
                  for line in p.read_text().splitlines()}
    assert not trained_on & {f.split(":")[1] for f in saved["held_out"]}  # never trained on
    summary = saved["summary"]
    assert 0 <= summary["one-to-one, held-out families"] <= 1 and 0 <= summary["one-to-one, trained-on families"] <= 1
    assert set(result["by_format"]) == {"wav", "flac", "mp3-24k", "aac", "opus"}
    assert "(held out)" in (out / "report.html").read_text()


def test_demo_beats_chance_and_finds_offsets(demo):
    _, result = demo
    m = result["metrics"]
    chance = 1 / TINY.n_test
    # 16 pairs, some of families never trained on: a working model gets about 0.3-0.4 here,
    # a broken one 1/16 and top-5 5/16 (by chance: P(one-to-one >= 3/16) ~ 0.08, P(top-5 >= 8/16) ~ 0.07)
    assert m["one_to_one"] >= 3 * chance and m["top5"] >= 0.45, m
    assert 0.0 <= result["floor"]["one_to_one"] <= 1.0
    assert m["offset_within_40ms"] >= 0.5  # of the right pairs: the offsets come out of the same model


def test_floor_finds_a_lag():
    rng = np.random.default_rng(0)
    motion = np.zeros((60, 3), np.float32)
    events = rng.choice(np.arange(5, 55), 6, replace=False)
    motion[events, -1] = 1.0
    onsets = np.zeros((60, 42), np.float32)
    onsets[events - 4, 40] = 1.0  # the sound comes 4 rows early: video row t meets audio row t - 4
    other = np.zeros((60, 42), np.float32)
    other[rng.choice(np.arange(60), 6, replace=False), 40] = 1.0
    scores, lags = motion_onset_scores([motion], [onsets, other], max_lag=8)
    assert scores[0, 0] > scores[0, 1] and lags[0, 0] == -4


def test_cli_demo_options(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("avmatch.demo.run_demo", lambda out, **kw: seen.update(out=out, **kw))
    assert main(["demo", "-o", str(tmp_path), "--quick", "--train-clips", "8", "--test-clips", "4", "--epochs", "2"]) == 0
    assert seen == {"out": str(tmp_path), "quick": True, "seed": 0, "n_train": 8, "n_test": 4, "epochs": 2}


def test_demo_keeps_out_of_folders_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(AvmatchError, match="not made by avmatch demo"):
        run_demo(tmp_path, config=TINY, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "media").exists()
