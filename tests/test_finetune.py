"""Fine-tuning (`train --init`) and the shipped default model."""

import dataclasses

import numpy as np
import pytest
import torch

from avmatch.checkpoint import load_trained
from avmatch.errors import AvmatchError
from avmatch.synthetic import make_feature_corpus
from avmatch.train import TrainConfig, train


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
    with pytest.raises(AvmatchError, match="extract with the same extractor"):
        train(foreign, tmp_path / "b", TrainConfig(model="", epochs=1, init=str(first_run)), progress=False)
