"""`avmatch compare`: several models trained on one corpus, tabulated as the report did."""

from avmatch.demo.compare import compare
from avmatch.demo.synthetic import make_feature_corpus
from avmatch.train import TrainConfig


def test_compare_trains_each_model_and_tabulates_it_against_chance(tmp_path):
    corpus = make_feature_corpus(80, min_len=5, max_len=8, seed=1, video_dim=12, audio_dim=6)
    rows = compare(corpus, ["va-metric", "dual"], tmp_path, TrainConfig(epochs=4, batch_size=16, histograms=False),
                   test_fraction=0.25, progress=False)
    assert [r["model"] for r in rows] == ["va-metric", "dual"]
    for r in rows:
        assert r["parameters"] > 0 and 0.0 <= r["top1"] <= r["top5"] <= 1.0 and 0.0 < r["mrr"] <= 1.0
        assert (tmp_path / r["model"] / "best.pt").is_file()
    assert max(r["top5"] for r in rows) > 5 / 20  # 20 test pairs: someone beats chance's top-5
    table = (tmp_path / "compare.md").read_text()
    assert "| va-metric |" in table and "| dual |" in table and "| chance |" in table and "20 test pairs" in table
