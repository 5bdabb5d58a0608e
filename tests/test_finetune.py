"""Fine-tuning (`train --init`) and the shipped default model."""

import dataclasses

import numpy as np
import pytest
import torch

from avmatch.checkpoint import load_trained
from avmatch.errors import AvmatchError
from avmatch.testing.featuregen import make_feature_corpus
from avmatch.training import TrainConfig, train


@pytest.fixture(scope="module")
def corpus():
    return make_feature_corpus(40, min_len=5, max_len=9, seed=4, video_dim=16, audio_dim=8)


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("init") / "first"
    train(corpus, run, TrainConfig(model="dual", epochs=2, batch_size=16, histograms=False), progress=False)
    return run


def test_init_starts_from_the_given_weights_and_statistics(corpus, first_run, tmp_path):
    start = load_trained(first_run)
    # another corpus of the same features: its own statistics would differ from the first run's
    other = make_feature_corpus(40, min_len=5, max_len=9, seed=9, video_dim=16, audio_dim=8)
    cfg = TrainConfig(model="", epochs=1, batch_size=16, lr=1e-12, weight_decay=0.0, histograms=False,
                      init=str(first_run))
    train(other, tmp_path / "tuned", cfg, progress=False)
    tuned = load_trained(tmp_path / "tuned")
    assert tuned.model.name == "dual" and tuned.model.config == start.model.config
    np.testing.assert_array_equal(tuned.audio_mean, start.audio_mean)
    for k, v in start.model.state_dict().items():
        torch.testing.assert_close(tuned.model.state_dict()[k], v, atol=1e-6, rtol=0)


def test_init_refuses_another_model_or_other_features(corpus, first_run, tmp_path):
    with pytest.raises(AvmatchError, match="holds a 'dual' model"):
        train(corpus, tmp_path / "a", TrainConfig(model="lstm", epochs=1, init=str(first_run)), progress=False)
    foreign = dataclasses.replace(corpus, extractor={"name": "default", "version": 2, "params": {"fps": 25.0}})
    with pytest.raises(AvmatchError, match="features of another extractor do not fit the model"):
        train(foreign, tmp_path / "b", TrainConfig(model="", epochs=1, init=str(first_run)), progress=False)


@pytest.fixture(scope="module")
def media_pairs(tmp_path_factory):
    """Six 3 s paired clips of two generators, and their test form: silent videos, shifted audio."""
    from avmatch.demo import scenes, worlds

    root = tmp_path_factory.mktemp("shipped")
    clips = (scenes.make_corpus(root / "clips" / "a", 3, 3.0, seed=7, size=(48, 48)) +
             worlds.make_corpus(root / "clips" / "b", 3, 3.0, seed=7, size=(48, 48), first=10))
    scenes.make_test_set(clips, root / "test", seed=1, max_offset_s=0.3)
    return root


def test_the_shipped_model_matches_with_no_training(media_pairs, tmp_path, capsys):
    """`avmatch match VIDEOS AUDIOS` with no --model: the package's own weights, loaded offline."""
    import csv

    from avmatch.cli import main
    from avmatch.shipped import NAMES, describe

    assert NAMES["default"].is_file() and len(describe()["trained_on_families"]) >= 10
    out = tmp_path / "pairs.csv"
    main(["match", str(media_pairs / "test" / "videos"), str(media_pairs / "test" / "audios"), "-o", str(out)])
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 6 and len({r["audio"] for r in rows}) == 6 and all(r["offset_s"] for r in rows)


@pytest.fixture(scope="module")
def media_feats(media_pairs):
    import avmatch

    avmatch.extract([media_pairs / "clips"], media_pairs / "feats", paired=True, progress=False)
    return media_pairs / "feats"


def test_fine_tuning_the_shipped_model_on_paired_media(media_feats, tmp_path):
    import avmatch

    model = avmatch.train(media_feats, tmp_path / "run", init="default", epochs=1, batch_size=6,
                          window_s=0.0, progress=False)
    shipped = avmatch.load("default")
    assert model.trained.model.config == shipped.trained.model.config
    np.testing.assert_array_equal(model.trained.video_mean, shipped.trained.video_mean)


def test_train_starts_from_the_shipped_model_where_the_features_fit_it(media_feats, corpus, tmp_path, capsys):
    """`avmatch train FEATS -o RUN` with no --model, --recipe or --init fine-tunes the shipped model on
    default-extractor features (at FINE_TUNE's rate, the sync recipe's windows); --init none trains a
    new model; features the shipped model does not fit get the model that suits them, from scratch."""
    import json

    from avmatch.cli import main
    from avmatch.corpus import write_corpus
    from avmatch.training import FINE_TUNE, RECIPES

    def settings(run):
        return json.loads((run / "config.json").read_text())["train"]

    assert main(["train", str(media_feats), "-o", str(tmp_path / "tuned"), "--epochs", "1", "--batch-size", "6"]) == 0
    assert "fine-tuning the shipped model" in capsys.readouterr().err
    tuned = settings(tmp_path / "tuned")
    assert tuned["init"] == "default" and tuned["model"] == "sync" and tuned["lr"] == FINE_TUNE["lr"]
    assert tuned["window_s"] == RECIPES["sync"]["window_s"] and tuned["epochs"] == 1
    assert main(["train", str(media_feats), "-o", str(tmp_path / "new"), "--init", "none", "--epochs", "1",
                 "--batch-size", "6"]) == 0
    new = settings(tmp_path / "new")
    assert new["init"] == "" and new["model"] == "sync" and new["lr"] != FINE_TUNE["lr"]
    write_corpus(corpus, tmp_path / "course")
    assert main(["train", str(tmp_path / "course"), "-o", str(tmp_path / "dual"), "--epochs", "1"]) == 0
    assert "using 'dual'" in capsys.readouterr().err and settings(tmp_path / "dual")["init"] == ""


def test_a_new_sync_model_reads_the_extractors_motion_maps(media_feats, corpus, tmp_path):
    """Training fills ``video_maps`` from the extractor that made the corpus (Extractor.video_maps):
    the default extractor's two 16x16 motion maps; features of unknown layout get none."""
    import avmatch
    from avmatch.features.frames import FrameRateFeatures

    model = avmatch.train(media_feats, tmp_path / "run", model="sync", epochs=1, batch_size=6,
                          window_s=0.0, progress=False)
    assert model.trained.model.config["video_maps"] == list(FrameRateFeatures.video_maps) == [96, 2, 16]
    assert model.trained.model.video.front is not None
    plain = avmatch.train(corpus, tmp_path / "plain", model="sync", epochs=1, batch_size=16, progress=False)
    assert plain.trained.model.config["video_maps"] is None and plain.trained.model.video.front is None


def test_fine_tuning_never_replaces_the_start_with_something_worse(corpus, first_run, tmp_path):
    """Epoch 0 is the started model on the user's validation clips: a fine-tuning that does not beat it
    (here a wild learning rate wrecks the weights) leaves best.pt with the starting weights."""
    start = load_trained(first_run)
    cfg = TrainConfig(model="", epochs=2, batch_size=16, lr=10.0, histograms=False, init=str(first_run))
    result = train(corpus, tmp_path / "wrecked", cfg, progress=False)
    assert result["val_top1"] >= result["start_top1"] > 0
    assert result["kept_start"] and result["best_epoch"] == 0
    kept = load_trained(tmp_path / "wrecked")
    for k, v in start.model.state_dict().items():
        torch.testing.assert_close(kept.model.state_dict()[k], v, atol=0, rtol=0)
    gentle = train(corpus, tmp_path / "gentle", TrainConfig(model="", epochs=2, batch_size=16, histograms=False,
                                                            init=str(first_run)), progress=False)
    assert gentle["val_top1"] >= gentle["start_top1"]
