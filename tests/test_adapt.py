"""Adaptation at match time: the model fine-tuned on the pairs it is already sure of."""

import csv

import numpy as np
import pytest
import torch

from avmatch import adapt
from avmatch.corpus import Clip
from avmatch.errors import AvmatchError
from avmatch.matching import MatchResult
from avmatch.matching.locate import Placement


def frames(n: int, start: int = 0) -> np.ndarray:
    """(n, 2) rows that say which frame they are: row t holds start + t."""
    return np.stack([np.arange(start, start + n, dtype=np.float32)] * 2, axis=1)


def test_sure_pairs_are_the_sure_matched_pairs_cut_to_where_they_overlap():
    videos = [Clip(f"v{i}", video=frames(100)) for i in range(4)]
    audios = [Clip(f"a{i}", audio=frames(100, 1000)) for i in range(4)]
    result = MatchResult([c.id for c in videos], [c.id for c in audios], np.eye(4), np.array([2, 0, 1, -1]), "hungarian",
                         confidence=np.array([0.95, 0.99, 0.5, np.nan]), offset_s=np.array([0.4, -0.2, 0.0, np.nan]))
    pairs = adapt.sure_pairs(result, videos, audios, rate_hz=25.0)
    assert [p.id for p in pairs] == ["sure/v1", "sure/v0"]  # surest first; unsure and unmatched left out
    v1, v0 = pairs
    # v1: the audio starts 0.2 s (5 frames) before the video: its frame 5 meets the video's frame 0
    assert v1.video[0, 0] == 0 and v1.audio[0, 0] == 1005 and len(v1.video) == len(v1.audio) == 95
    # v0: the audio starts 0.4 s (10 frames) into the video
    assert v0.video[0, 0] == 10 and v0.audio[0, 0] == 1000 and len(v0.video) == len(v0.audio) == 90


def test_placed_pairs_are_the_sure_placements_with_their_stretch_of_recording():
    from avmatch.corpus import Corpus

    clips = Corpus([Clip("t1", video=frames(50)), Clip("t2", video=frames(50)), Clip("t3", video=frames(50))], 25.0, 25.0)
    recordings = Corpus([Clip("r", audio=frames(1000, 5000))], 25.0, 25.0)
    placements = [Placement("t1", "r", 2.0, 4.0, 0.5, 9.0, 0.97, "r"), Placement("t2", "", 8.0, 10.0, 0.2, 3.0, 0.4, "r"),
                  Placement("t3", "r", 39.52, 41.52, 0.5, 9.0, 0.99, "r")]  # t3 runs past the recording's end
    pairs = adapt.placed_pairs(placements, clips, recordings, 25.0, reverse=False)
    assert [p.id for p in pairs] == ["sure/t3", "sure/t1"]
    t3, t1 = pairs
    assert t1.audio[0, 0] == 5050 and len(t1.audio) == len(t1.video) == 50
    assert t3.audio[0, 0] == 5000 + 988 and len(t3.audio) == len(t3.video) == 12  # cut at the recording's end
    swapped = adapt.placed_pairs(placements[:1], Corpus([Clip("t1", audio=frames(50))], 25.0, 25.0),
                                 Corpus([Clip("r", video=frames(1000, 5000))], 25.0, 25.0), 25.0, reverse=True)
    assert swapped[0].video[0, 0] == 5050 and swapped[0].audio[0, 0] == 0


@pytest.fixture(scope="module")
def user_clips(tmp_path_factory):
    """20 clips of 3 s of two generators, as a user has them: silent videos, shifted audios, a key."""
    from avmatch.demo import scenes, worlds
    from avmatch.features.job import extract

    root = tmp_path_factory.mktemp("adapt")
    clips = (scenes.make_corpus(root / "clips" / "a", 10, 3.0, seed=21, size=(48, 48), workers=2) +
             worlds.make_corpus(root / "clips" / "b", 10, 3.0, seed=21, size=(48, 48), first=50, workers=2))
    key = scenes.make_test_set(clips, root / "test", seed=4, max_offset_s=0.5)
    for part in ("videos", "audios"):
        extract([root / "test" / part], root / "feats" / part, "default", progress=False)
    return root, {r["video"]: r["audio"] for r in csv.DictReader(open(key))}


def test_match_adapts_on_its_sure_pairs_and_leaves_the_model_given_as_it_was(user_clips, monkeypatch):
    import avmatch
    from avmatch.corpus import load_corpus

    root, key = user_clips
    monkeypatch.setattr(adapt, "MIN_PAIRS", 4)  # 20 clips: a round needs only a few sure pairs here
    model = avmatch.load("default")
    before = {k: v.clone() for k, v in model.trained.model.state_dict().items()}
    videos, audios = load_corpus(root / "feats" / "videos"), load_corpus(root / "feats" / "audios")
    plain = adapt.match_adapted(model.trained, videos, audios, rounds=0)
    adapted = adapt.match_adapted(model.trained, videos, audios, rounds=1)
    assert plain.adapted == [] and len(adapted.adapted) == 1 and adapted.adapted[0] >= 4
    assert not np.allclose(adapted.raw_scores, plain.raw_scores)  # matched again, by another model
    assert all(torch.equal(before[k], v) for k, v in model.trained.model.state_dict().items())
    right = np.mean([key[v] == a for v, a in adapted.pairs])
    assert right >= 0.9, adapted.pairs


def test_adapt_rounds_out_of_range_are_one_line(user_clips):
    from avmatch.cli import main

    root, _ = user_clips
    with pytest.raises(AvmatchError, match="--adapt 11"):
        adapt.match_adapted(None, None, None, rounds=11)
    with pytest.raises(SystemExit) as stop:
        main(["match", str(root / "feats" / "videos"), str(root / "feats" / "audios"), "--adapt", "-1"])
    assert stop.value.code == 2
