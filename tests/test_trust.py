"""Never a silently wrong answer: outputs of one run as one unit, checkpoints trusted for their weights
only, mismatches between a run and its input refused, every fault one line (issue 10, causes 2-5)."""

import os
import resource
import time

import numpy as np
import pytest
import torch

from avmatch.checkpoint import Trained, load_trained
from avmatch.cli import main
from avmatch.corpus import Corpus
from avmatch.errors import AvmatchError
from avmatch.features import get_extractor
from avmatch.features.record import ExtractorRecord, regular_file, sha1_of
from avmatch.inference import score_matrix
from avmatch.matching import MatchOptions, MatchResult, assign, match_corpora
from avmatch.matching.index import build_index, index_corpus, index_embeddings, load_index
from avmatch.metrics import evaluate_pairs
from avmatch.models import build_model
from avmatch.testing.featuregen import make_feature_corpus


def tiny(tmp_path, name="dual", extractor=None, **options) -> tuple[Trained, object]:
    torch.manual_seed(0)
    model = build_model(name, 6, 4, **(options or {"hidden": 8, "embed_dim": 4, "blocks": 1}))
    trained = Trained(model, np.zeros(6, np.float32), np.ones(6, np.float32), np.zeros(4, np.float32),
                      np.ones(4, np.float32), extractor=ExtractorRecord.from_dict(extractor or {"name": "classic", "version": 1}))
    trained.save(tmp_path / f"{name}.pt")
    return trained, tmp_path / f"{name}.pt"


def edited(path, out, change) -> object:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, out)
    return out


# ------------------------------------------------------------------------------------ checkpoints


def test_a_config_far_larger_than_its_weights_is_refused_before_it_costs_memory(tmp_path):
    _, good = tiny(tmp_path)
    big = edited(good, tmp_path / "big.pt", lambda s: s["model_config"].update(hidden=4000))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(AvmatchError, match="big.pt: weights do not fit model 'dual'"):
        load_trained(big)
    assert time.perf_counter() - started < 10
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # the real model of hidden=4000 would take over 1 GB


def test_a_run_keeps_its_confidence_temperature_and_a_bad_one_is_refused(tmp_path):
    """Training fits the confidence's temperature on its validation pairs and best.pt keeps it; match
    reads it; a checkpoint without one (older, shipped) means 1; a bad value is one line."""
    from avmatch.matching.dense import fit_temperature
    from avmatch.training import TrainConfig, train, validate

    corpus = make_feature_corpus(60, min_len=5, max_len=9, seed=3, video_dim=6, audio_dim=4)
    train(corpus, tmp_path / "run", TrainConfig(model="dual", epochs=2, batch_size=16, histograms=False,
                                                model_options={"hidden": 8, "embed_dim": 4, "blocks": 1}), progress=False)
    run = load_trained(tmp_path / "run")
    _, val = corpus.paired().split(0.15, 0)
    assert run.temperature == pytest.approx(fit_temperature(validate(run, val)[1])) and run.temperature != 1.0
    older = edited(tmp_path / "run" / "best.pt", tmp_path / "older.pt", lambda s: s.pop("calibration"))
    assert load_trained(older).temperature == 1.0
    for bad in (0.0, -1.0, float("nan"), "hot", True):
        path = edited(older, tmp_path / "bad.pt", lambda s, bad=bad: s.update(calibration={"temperature": bad}))
        with pytest.raises(AvmatchError, match="bad.pt: malformed checkpoint: calibration temperature"):
            load_trained(path)


def test_a_lag_range_out_of_bounds_is_refused(tmp_path):
    _, good = tiny(tmp_path, "sync", hidden=8, embed_dim=4)
    bad = edited(good, tmp_path / "lag.pt", lambda s: s["model_config"].update(max_lag=5_000_000))
    with pytest.raises(AvmatchError, match="max_lag is 5000000, outside"):
        load_trained(bad)


def test_a_checkpoint_never_names_a_file_to_load(tmp_path):
    net = tmp_path / "net.pt"
    net.write_bytes(b"pretend TorchScript")
    record = {"name": "weights", "version": 1, "params": {"video_weights": str(net), "audio_weights": "", "fps": 5.0},
              "weights_sha1": {"video": sha1_of(str(net))}}
    _, path = tiny(tmp_path, extractor=record)
    trained = load_trained(path)
    assert trained.extractor.params["video_weights"] == ""  # the path is not kept
    with pytest.raises(AvmatchError, match="give that file again with --option weights=PATH"):
        trained.extractor.for_media({}, path)
    other = tmp_path / "other.pt"
    other.write_bytes(b"another network")
    with pytest.raises(AvmatchError, match="are not the one"):
        trained.extractor.for_media({"weights": str(other)}, path)
    with pytest.raises(AvmatchError, match="extracted with fps=5.0, not 25"):
        trained.extractor.for_media({"weights": str(net), "fps": 25}, path)
    assert trained.extractor.for_media({"weights": str(net)}, path).params["weights"] == str(net)
    bad = edited(path, tmp_path / "bad-extractor.pt", lambda s: s["extractor"]["params"].update(code="x" * 5000))
    with pytest.raises(AvmatchError, match="bad-extractor.pt: malformed checkpoint"):
        load_trained(bad)


def test_absurd_extractor_options_and_pipes_are_refused(tmp_path):
    for name, option in (("default", {"sample_rate": 4_000_000}), ("classic", {"sample_rate": 4_000_000}),
                         ("classic", {"frames_per_s": 100_000}), ("weights", {"fps": 0.0, "weights": "x"})):
        with pytest.raises(AvmatchError, match="must be in"):
            get_extractor(name, **option)
    os.mkfifo(tmp_path / "pipe.pt")
    started = time.perf_counter()
    with pytest.raises(AvmatchError, match="pipe.pt: is not a regular file"):
        regular_file(tmp_path / "pipe.pt")
    assert time.perf_counter() - started < 1


# ------------------------------------------------------------------------------------ output sets


def _result(scores):
    return MatchResult(["v0", "v1", "v2"], ["a0", "a1", "a2"], scores, assign(scores), "hungarian")


def test_pairs_and_scores_of_different_runs_are_refused(tmp_path):
    key = tmp_path / "key.csv"
    key.write_text("\ufeffvideo, audio\nv0, a0\nv1, a1\nv2, a2\n")  # a BOM and spaces after commas
    first = np.eye(3) + 0.1
    _result(first).write(tmp_path / "pairs.csv")
    assert evaluate_pairs(tmp_path / "pairs.csv", key)["one_to_one"] == 1.0
    (tmp_path / "pairs.scores.npz").rename(tmp_path / "old.npz")
    _result(np.eye(3)[[1, 2, 0]]).write(tmp_path / "pairs.csv")  # another run: every pair wrong
    (tmp_path / "old.npz").replace(tmp_path / "pairs.scores.npz")  # as a kill between renames left it
    with pytest.raises(AvmatchError, match="pairs.scores.npz: pairs.csv is not the pairs file of this score matrix"):
        evaluate_pairs(tmp_path / "pairs.csv", key)


def test_a_new_output_set_removes_the_old_one_and_stale_temp_files(tmp_path):
    stale = tmp_path / ".pairs.csv.abc123.tmp.csv"
    stale.write_text("left by a killed run")
    _result(np.eye(3)).write(tmp_path / "pairs.csv")
    assert (tmp_path / "pairs.heatmap.png").exists()
    _result(np.eye(3)).write(tmp_path / "pairs.csv", heatmap=False)
    assert not stale.exists() and not (tmp_path / "pairs.heatmap.png").exists()


@pytest.mark.parametrize("pairs, key, fault", [
    ("v0,a0\nv0,a1\n", "v0,a0\nv1,a1\n", "pairs.csv: video 'v0' is listed twice"),
    ("v0,a0\nv1,a1\n", "v0,a0\nv1,a0\n", "key.csv: audio 'a0' is given to two videos"),
    ("v0,a0\nv1,a0\n", "v0,a0\nv1,a1\n", "pairs.csv: audio 'a0' is given to two videos"),
])
def test_evaluate_refuses_files_that_are_not_one_to_one(tmp_path, pairs, key, fault):
    (tmp_path / "pairs.csv").write_text("video,audio\n" + pairs)
    (tmp_path / "key.csv").write_text("video,audio\n" + key)
    with pytest.raises(AvmatchError, match=fault):
        evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")


def test_evaluate_refuses_nan_offsets(tmp_path):
    (tmp_path / "pairs.csv").write_text("video,audio,offset_s\nv0,a0,0.5\n")
    (tmp_path / "key.csv").write_text("video,audio,offset_s\nv0,a0,nan\n")
    with pytest.raises(AvmatchError, match="key.csv: offset_s of video 'v0' is 'nan', not a finite number"):
        evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")


def test_train_refuses_a_run_folder_holding_a_run_unless_forced(tmp_path, capsys):
    from avmatch.corpus import write_corpus

    write_corpus(make_feature_corpus(12, video_dim=6, audio_dim=4, min_len=3, max_len=5), tmp_path / "feats")
    args = ["train", str(tmp_path / "feats"), "-o", str(tmp_path / "run"), "--model", "dual", "--epochs", "1",
            "--no-histograms", "--option", "hidden=8", "--option", "embed_dim=4"]
    assert main(args) == 0
    before = (tmp_path / "run" / "best.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "best.pt").stat().st_mtime_ns == before
    events = list((tmp_path / "run" / "tb").iterdir())
    assert main([*args, "--force"]) == 0
    assert not any(e.exists() for e in events)  # the old run's TensorBoard events went with it
    capsys.readouterr()
    assert main([*args, "--resume", "--epochs", "3"]) == 2  # would have gone on for the run's 1 epoch
    assert "epochs 1 there, 3 asked" in capsys.readouterr().err
    (tmp_path / "run" / "config.json").write_text("{")
    assert main([*args, "--resume"]) == 2
    assert "cannot resume: config.json" in capsys.readouterr().err
    # a run whose checkpoints were moved away still holds its metrics and logs: not cleared without --force
    for name in ("best.pt", "last.pt"):
        (tmp_path / "run" / name).unlink()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.json").is_file() and any((tmp_path / "run" / "tb").iterdir())


# ------------------------------------------------------------------------------------ mismatches


def test_a_distance_model_is_indexed_and_retrieved_by_its_own_score(tmp_path):
    corpus = make_feature_corpus(30, video_dim=6, audio_dim=4, min_len=3, max_len=6, seed=2)
    trained, _ = tiny(tmp_path, "va-metric", extractor=corpus.extractor, hidden=8, embed_dim=4)
    dense = score_matrix(trained, [c.video for c in corpus.clips], [c.audio for c in corpus.clips])
    index = index_corpus(trained, corpus)
    assert index.metric == "l2"
    hits = index.search([c.id for c in corpus.clips], k=1)
    assert [h[0][0] for h in hits] == [corpus.clips[j].id for j in dense.argmax(1)]
    assert [h[0][1] for h in hits] == pytest.approx(dense.max(1), abs=1e-4)  # the model's printed score
    two = match_corpora(trained, corpus, corpus,
                        MatchOptions(mode="two-stage", candidates=30, normalise="none", greedy=True))
    assert two.chosen.tolist() == dense.argmax(1).tolist()


def test_features_at_another_rate_or_from_another_extractor_are_refused(tmp_path):
    corpus = make_feature_corpus(6, video_dim=6, audio_dim=4, min_len=3, max_len=5)
    trained, _ = tiny(tmp_path)
    trained.video_rate_hz = trained.audio_rate_hz = 25.0
    slow = Corpus(corpus.clips, 10.0, 10.0, {"name": "classic", "version": 1})
    with pytest.raises(AvmatchError, match="visual features at 10 Hz but the model was trained on 25 Hz"):
        match_corpora(trained, slow, slow)
    other = Corpus(corpus.clips, 25.0, 25.0, {"name": "efficientnet", "version": 1})
    with pytest.raises(AvmatchError, match="extractor name 'efficientnet', the run's is 'classic'"):
        match_corpora(trained, other, other)


# ------------------------------------------------------------------------------------ FAISS files


def test_index_files_are_checked_before_faiss_reads_them(tmp_path):
    emb = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    index_embeddings([f"v{i}" for i in range(5)], emb, [f"a{i}" for i in range(5)], emb).save(tmp_path / "ok")
    load_index(tmp_path / "ok")
    audio = (tmp_path / "ok" / "audio.faiss").read_bytes()
    forged = bytearray(audio[:45])
    forged[37:45] = (500_000_000).to_bytes(8, "little")  # "500 M floats follow" in a 109-byte file
    (tmp_path / "ok" / "audio.faiss").write_bytes(bytes(forged) + bytes(64))
    with pytest.raises(AvmatchError, match="audio.faiss: .*(cannot hold|do not add up)"):
        load_index(tmp_path / "ok")
    index_embeddings(["x"] * 0 + [f"v{i}" for i in range(5)], emb[::-1].copy(), [f"a{i}" for i in range(5)],
                     emb).save(tmp_path / "other")
    (tmp_path / "ok" / "audio.faiss").write_bytes(audio)
    (tmp_path / "other" / "video.faiss").replace(tmp_path / "ok" / "video.faiss")  # a set mixed from two runs
    with pytest.raises(AvmatchError, match="video.faiss: is not the file index.json recorded"):
        load_index(tmp_path / "ok")
    (tmp_path / "ok" / "index.json").write_text('{"format": "avmatch-index", "format_version": 1, "video_ids": 3}')
    with pytest.raises(AvmatchError, match="index.json: malformed index.json: video_ids"):
        load_index(tmp_path / "ok")


@pytest.mark.parametrize("kind, options, fault", [
    ("hnsw", {"hnsw_m": 0}, "--hnsw-m 0"), ("hnsw", {"hnsw_m": -5}, "--hnsw-m -5"),
    ("ivf", {}, "needs at least 39 clips"), ("ivf", {"nlist": 500}, "--nlist 500"),
])
def test_index_options_out_of_range_are_one_line(kind, options, fault):
    emb = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    with pytest.raises(AvmatchError, match=fault):
        build_index(emb, kind, **options)


def test_a_folder_named_default_never_stands_in_for_the_shipped_model(tmp_path, monkeypatch):
    from avmatch.shipped import NAMES, model_path

    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "best.pt").write_bytes(b"planted")
    monkeypatch.chdir(tmp_path)
    assert model_path("default") == NAMES["default"]
    assert model_path("./default").resolve() == (tmp_path / "default").resolve()  # the folder, asked for as one


def test_evaluate_reads_a_key_that_names_files_as_the_user_has_them(tmp_path):
    (tmp_path / "pairs.csv").write_text("video,audio,offset_s\nv084d024967,a6d88892449,0.5\nv2,a3,0\nv3,a9,0\n")
    (tmp_path / "key.csv").write_text("video,audio\nv084d024967.mp4,a6d88892449.flac\nv2.mkv,a3.wav\nv3.mp4,a4.mp3\n")
    got = evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")
    assert got["one_to_one"] == pytest.approx(2 / 3) and got["not_in_key"] == []
    assert got["wrong"] == [{"video": "v3", "chosen": "a9", "true": "a4.mp3"}]
    (tmp_path / "other.csv").write_text("video,audio\nx1,y1\nx2,y2\n")  # a key of another test set
    with pytest.raises(AvmatchError, match="names none of the videos"):
        evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "other.csv")


@pytest.mark.parametrize("argv, says", [
    (["train", "{feats}", "-o", "{run}", "--val-fraction", "1.5"], "val_fraction is 1.5"),
    (["train", "{feats}", "-o", "{run}", "--lr", "nan"], "lr is nan"),
    (["train", "{feats}", "-o", "{run}", "--epochs", "0"], "epochs is 0"),
    (["train", "{feats}", "-o", "{run}", "--model", "dual", "--option", "hidden=-4"], "hidden=-4"),
    (["make-features", "-o", "{run}", "--clips", "0"], "--clips: 0 is less than 1"),
    (["make-features", "-o", "{run}", "--shape", "timing", "--content", "0.5"], "use them with --shape course"),
    (["make-features", "-o", "{run}", "--timing", "1.5"], "--timing: 1.5 is not from 0 to 1"),
    (["match", "{feats}", "{feats}", "-o", "{run}/p.csv", "--candidates", "-5"], "--candidates: -5 is less than 1"),
    (["locate", "{feats}", "{feats}", "--min-confidence", "2"], "--min-confidence: 2 is not from 0 to 1"),
])
def test_bad_option_values_get_one_line_naming_them(tmp_path, capsys, argv, says):
    from avmatch.corpus import write_corpus

    write_corpus(make_feature_corpus(6, video_dim=6, audio_dim=4, min_len=3, max_len=5), tmp_path / "feats")
    argv = [a.format(feats=tmp_path / "feats", run=tmp_path / "run") for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert says in err and "internal error" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.pt"))


@pytest.mark.parametrize("value, says", [("x", "is not a number: 'x'"), ("2", "not a probability")])
def test_evaluate_refuses_a_confidence_that_is_no_probability(tmp_path, value, says):
    (tmp_path / "pairs.csv").write_text(f"video,audio,confidence\nv1,a1,{value}\nv2,a2,0.5\n")
    (tmp_path / "key.csv").write_text("video,audio\nv1,a1\nv2,a2\n")
    with pytest.raises(AvmatchError, match=says):
        evaluate_pairs(tmp_path / "pairs.csv", tmp_path / "key.csv")
