"""`avmatch compare`: several models trained on one corpus, tabulated as the report did."""

from avmatch.demo.compare import compare
from avmatch.testing.featuregen import make_feature_corpus


def test_compare_trains_each_model_and_tabulates_it_against_chance(tmp_path):
    corpus = make_feature_corpus(80, min_len=5, max_len=8, seed=1, video_dim=12, audio_dim=6)
    groups = {c.id: ("odd", "even")[k % 2 == 0] for k, c in enumerate(corpus.clips)}  # e.g. scene families
    rows = compare(corpus, ["va-metric", "dual"], tmp_path, {"epochs": 4, "batch_size": 16, "histograms": False},
                   test_fraction=0.25, progress=False, groups=groups)
    assert [r["model"] for r in rows] == ["va-metric", "dual"]
    for r in rows:
        assert r["parameters"] > 0 and 0.0 <= r["top1"] <= r["top5"] <= 1.0 and 0.0 < r["mrr"] <= 1.0
        each = [r["one_to_one even"], r["one_to_one odd"]]  # one-to-one within each group
        assert min(each) <= r["one_to_one"] <= max(each)
        assert (tmp_path / r["model"] / "best.pt").is_file()
    assert max(r["top5"] for r in rows) > 5 / 20  # 20 test pairs: someone beats chance's top-5
    assert all(r["top5_of_30"] is None for r in rows)  # fewer than the course's 30 test pairs
    table = (tmp_path / "compare.md").read_text()
    assert "| va-metric |" in table and "| dual |" in table and "| chance |" in table and "20 test pairs" in table


def test_top5_of_30_ranks_within_groups_of_30_on_raw_scores():
    import numpy as np

    from avmatch.demo.compare import top5_of_30

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(65, 65))
    scores[np.arange(30), np.arange(30)] += 100  # the first group all right
    scores[30:60, 30:60] = 0.0
    scores[np.arange(30, 60), np.arange(30, 60)] = -1.0  # the second all last among their 30
    scores[np.arange(30, 60), (np.arange(30, 60) + 1 - 30) % 30 + 30] = 5.0
    assert top5_of_30(scores) == 0.5  # (1 + 0) / 2; the last 5 pairs form no group
    assert top5_of_30(scores[:29, :29]) is None


def test_compare_takes_model_options_per_entry(tmp_path):
    """"NAME:KEY=VALUE,...": a model or recipe with options over its own, e.g. the report's recipe
    with interleaving; a malformed option is one line."""
    import pytest

    from avmatch.checkpoint import load_trained
    from avmatch.errors import AvmatchError

    corpus = make_feature_corpus(40, min_len=5, max_len=8, seed=1, video_dim=12, audio_dim=6)
    settings = {"epochs": 1, "batch_size": 16, "histograms": False}
    rows = compare(corpus, ["report:interleave=true,hidden=8"], tmp_path, settings, test_fraction=0.25, progress=False)
    assert rows[0]["model"] == "report:interleave=true,hidden=8"
    config = load_trained(tmp_path / "report+interleave=true+hidden=8").model.config
    assert config["interleave"] is True and config["hidden"] == 8 and config["residual_relu"] is True
    with pytest.raises(AvmatchError, match="options are KEY=VALUE"):
        compare(corpus, ["report:interleave"], tmp_path, settings, progress=False)


def test_make_features_writes_a_test_set_that_match_and_evaluate_take(tmp_path, capsys):
    from avmatch.cli import main
    from avmatch.corpus import load_corpus

    out = tmp_path / "course"
    assert main(["make-features", "-o", str(out), "--clips", "30", "--test", "8", "--video-dim", "32",
                 "--audio-dim", "8"]) == 0
    videos, audios = load_corpus(out / "test" / "videos"), load_corpus(out / "test" / "audios")
    assert len(videos.clips) == len(audios.clips) == 8
    assert all(c.audio is None for c in videos.clips) and all(c.video is None for c in audios.clips)
    key = (out / "test" / "key.csv").read_text().splitlines()
    assert key[0] == "video,audio" and len(key) == 9
    assert {c.id for c in videos.clips} == {row.split(",")[0] for row in key[1:]}
    assert len(load_corpus(out).clips) == 30  # the training corpus beside it is unchanged
    assert main(["train", str(out), "-o", str(tmp_path / "run"), "--model", "dual", "--epochs", "1",
                 "--no-histograms", "--option", "hidden=16", "--option", "embed_dim=8"]) == 0
    assert main(["match", str(out / "test" / "videos"), str(out / "test" / "audios"), "--model",
                 str(tmp_path / "run"), "-o", str(tmp_path / "pairs.csv")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "pairs.csv"), "--key", str(out / "test" / "key.csv")]) == 0
    assert "pairs: 8" in capsys.readouterr().out


def test_compare_offers_every_model_both_input_normalisations_and_keeps_the_better_on_validation(tmp_path):
    """--inputs global,clip: each model trains with global z-scores and with per-clip centring; the
    table names the one kept (the better validation top-1) and both validation scores; the kept run's
    checkpoint centres each clip as it was trained to, so a clip and the same clip shifted by a
    constant read the same."""
    import json

    import numpy as np

    from avmatch.checkpoint import load_trained

    corpus = make_feature_corpus(60, min_len=5, max_len=8, seed=2, video_dim=12, audio_dim=6)
    rows = compare(corpus, ["dual"], tmp_path, {"epochs": 2, "batch_size": 16, "histograms": False},
                   test_fraction=0.25, progress=False, inputs=("global", "clip"))
    kept = rows[0]["input"].split()[0]
    scores = {k: json.loads((tmp_path / f"dual+{k}" / "metrics.json").read_text())["val_top1"] for k in ("global", "clip")}
    assert kept == max(scores, key=scores.get) and f"global {scores['global']:.2f}" in rows[0]["input"]
    centred, plain = load_trained(tmp_path / "dual+clip"), load_trained(tmp_path / "dual+global")
    assert centred.centre_clips and not plain.centre_clips
    x = corpus.clips[0].video
    assert np.allclose(centred.standardise(x + 3.0, "video"), centred.standardise(x, "video"), atol=1e-5)
    assert not np.allclose(plain.standardise(x + 3.0, "video"), plain.standardise(x, "video"))
    assert "| input |" in (tmp_path / "compare.md").read_text()
