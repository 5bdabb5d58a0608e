"""The inference layer and the checkpoint config: a lag range given at match time leaves the loaded
model as it was, checkpoints record every option (defaults included), and old checkpoints still load."""

import copy

import numpy as np
import torch

from avmatch.checkpoint import Trained, load_trained
from avmatch.corpus import Clip, Corpus
from avmatch.inference import estimate_offsets, score_matrix
from avmatch.matching import MatchOptions, match_corpora
from avmatch.models import build_model


def tiny_sync(max_lag=6) -> Trained:
    torch.manual_seed(0)
    model = build_model("sync", 5, 4, hidden=8, embed_dim=4, max_lag=max_lag).eval()
    return Trained(model, np.zeros(5, np.float32), np.ones(5, np.float32), np.zeros(4, np.float32),
                   np.ones(4, np.float32), video_rate_hz=10.0, audio_rate_hz=10.0)


def clips(n=4, frames=30, seed=0):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal((frames, 5)).astype(np.float32) for _ in range(n)],
            [rng.standard_normal((frames, 4)).astype(np.float32) for _ in range(n)])


def test_a_lag_range_at_match_time_scores_as_a_model_built_with_it_and_changes_nothing():
    trained = tiny_sync(max_lag=6)
    videos, audios = clips()
    widened = copy.deepcopy(trained)
    widened.model.max_lag = 12  # what the model would do had it been built with this range
    want = score_matrix(widened, videos, audios)
    got = score_matrix(trained, videos, audios, max_lag=12)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not np.allclose(got, score_matrix(trained, videos, audios))  # the range does change scores
    np.testing.assert_allclose(estimate_offsets(trained, videos, audios, max_lag=12)[0],
                               estimate_offsets(widened, videos, audios)[0])
    corpus = Corpus([Clip(f"c{i}", v, a) for i, (v, a) in enumerate(zip(videos, audios, strict=True))],
                    video_rate_hz=10.0, audio_rate_hz=10.0)
    match_corpora(trained, corpus, corpus, MatchOptions(max_offset_s=1.2))
    assert trained.model.max_lag == 6 and trained.model.config["max_lag"] == 6


def test_a_checkpoint_records_every_option_and_an_old_one_without_defaults_still_loads(tmp_path):
    model = build_model("lstm-tw", 6, 4, hidden=8, embed_dim=4)
    assert model.config["pool"] == "attention" and model.config["layers"] == 2  # defaults recorded
    trained = Trained(model, np.zeros(6, np.float32), np.ones(6, np.float32), np.zeros(4, np.float32),
                      np.ones(4, np.float32))
    trained.save(tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    assert state["model_config"] == model.config
    state["model_config"] = {"video_dim": 6, "audio_dim": 4, "hidden": 8, "embed_dim": 4}  # as older avmatch wrote
    torch.save(state, tmp_path / "old.pt")
    old = load_trained(tmp_path / "old.pt")
    assert old.model.config == model.config
    x = torch.randn(2, 7, 6)
    with torch.no_grad():
        np.testing.assert_allclose(old.model.encode_video(x, torch.tensor([7, 5])),
                                   model.eval().encode_video(x, torch.tensor([7, 5])), rtol=1e-6)
