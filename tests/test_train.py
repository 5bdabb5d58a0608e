"""Training, matching and the CLI end to end on small generated feature corpora."""

import csv
import importlib
import json

import numpy as np
import pytest
import torch

from avmatch.checkpoint import load_trained
from avmatch.cli import main
from avmatch.corpus import write_corpus
from avmatch.errors import AvmatchError
from avmatch.inference import score_matrix
from avmatch.matching import match_corpora
from avmatch.metrics import retrieval_metrics
from avmatch.testing.featuregen import make_feature_corpus, shuffle_for_matching, write_key
from avmatch.training import TrainConfig, train

DIMS = {"video_dim": 48, "audio_dim": 24}


@pytest.fixture(scope="module")
def split():
    """260 training clips and 40 test pairs of a generated corpus."""
    return make_feature_corpus(300, min_len=6, max_len=12, seed=3, **DIMS).split(40 / 300, seed=0)


@pytest.fixture(scope="module")
def small():
    return make_feature_corpus(60, min_len=5, max_len=9, seed=4, **DIMS)


@pytest.fixture(scope="module")
def dual_run(split, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "dual"
    result = train(split[0], run, TrainConfig(model="dual", epochs=10, batch_size=32, seed=0, histograms=False),
                   progress=False)
    return run, result


def test_short_training_clearly_beats_chance(dual_run, split):
    run, result = dual_run
    test = split[1]
    scores = score_matrix(load_trained(run), [c.video for c in test.clips], [c.audio for c in test.clips])
    metrics = retrieval_metrics(scores)
    chance_top1 = 1 / len(test.clips)
    assert metrics["top1"] >= 10 * chance_top1, metrics
    assert metrics["top5"] >= 0.6, metrics
    for name in ("config.json", "best.pt", "last.pt", "metrics.json"):
        assert (run / name).exists()
    assert list((run / "tb").glob("events.out.tfevents.*"))


def test_match_recovers_a_shuffled_test_set(dual_run, split):
    run, _ = dual_run
    videos, audios, key = shuffle_for_matching(split[1], seed=1)
    result = match_corpora(load_trained(run), videos, audios)
    truth = dict(key)
    right = sum(truth[r["video"]] == r["audio"] for r in result.rows())
    assert right / len(key) >= 0.4
    assert len({r["audio"] for r in result.rows()}) == len(key)  # one-to-one


def test_resume_ends_like_an_uninterrupted_run(small, tmp_path, monkeypatch, killed_on_call):
    train_module = importlib.import_module("avmatch.training.loop")

    cfg = TrainConfig(model="gru", epochs=4, batch_size=16, seed=5, histograms=False, patience=99)
    straight = train(small, tmp_path / "a", cfg, progress=False)
    killed_on_call(train_module, "validate", 3)  # in the third epoch: after its training steps, before its checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(small, tmp_path / "b", cfg, progress=False)
    monkeypatch.undo()
    resumed = train(small, tmp_path / "b", cfg, resume=True, progress=False)
    assert resumed["epochs"] == 4
    for a, b in zip(straight["history"], resumed["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
        assert a["top1"] == pytest.approx(b["top1"])


def test_resume_without_a_run_is_a_clear_error(small, tmp_path):
    with pytest.raises(AvmatchError, match="nothing to resume"):
        train(small, tmp_path / "none", TrainConfig(model="dual", epochs=1), resume=True, progress=False)


def test_cli_end_to_end(tmp_path, capsys):
    corpus = make_feature_corpus(60, min_len=8, max_len=14, seed=7, **DIMS)
    train_set, test_set = corpus.split(0.33, seed=0)
    write_corpus(train_set, tmp_path / "train")
    videos, audios, key = shuffle_for_matching(test_set, seed=0)
    write_corpus(videos, tmp_path / "videos")
    write_corpus(audios, tmp_path / "audios")
    write_key(key, tmp_path / "key.csv")
    assert main(["train", str(tmp_path / "train"), "-o", str(tmp_path / "run"), "--model", "lstm",
                 "--epochs", "2"]) == 0
    # the report's diagnostics are in TensorBoard: curves, and histograms of weights, gradients,
    # layer outputs and matched vs mismatched scores
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"histograms": 0}).Reload()
    tags = events.Tags()
    assert {"loss/total", "grad/norm", "val/top1", "val/top5", "val/loss"} <= set(tags["scalars"])
    assert all(np.isfinite(e.value) and e.value > 0 for e in events.Scalars("val/loss"))
    assert len(events.Images("val/heatmap")) == 2  # the validation score matrix, one image per epoch
    assert all(e.value > 0 for e in events.Scalars("grad/norm"))
    assert "hparam/val_top1" in tags["scalars"]  # the run's settings and outcome in the HPARAMS table
    assert len(list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))) == 1  # in the run's one file
    for prefix in ("weights/", "grads/", "outputs/"):
        assert any(t.startswith(prefix) for t in tags["histograms"]), prefix
    assert {"scores/matched", "scores/mismatched"} <= set(tags["histograms"])
    assert len(events.Histograms("scores/matched")) == 2  # one per epoch
    assert main(["match", str(tmp_path / "videos"), str(tmp_path / "audios"), "--model", str(tmp_path / "run"),
                 "-o", str(tmp_path / "pairs.csv")]) == 0
    assert (tmp_path / "pairs.heatmap.png").stat().st_size > 1000
    capsys.readouterr()
    # --json: the same rows for a program
    assert main(["match", str(tmp_path / "videos"), str(tmp_path / "audios"), "--model", str(tmp_path / "run"),
                 "-o", str(tmp_path / "pairs.csv"), "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    with open(tmp_path / "pairs.csv") as f:
        assert [(r["video"], r["audio"]) for r in as_json["pairs"]] == [(r["video"], r["audio"]) for r in csv.DictReader(f)]
    # -o -: the same pairs on standard output, sorted by video; no file named "-"
    assert main(["match", str(tmp_path / "videos"), str(tmp_path / "audios"), "--model", str(tmp_path / "run"),
                 "-o", "-"]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "pairs.csv").read_bytes().decode() and not (tmp_path / "-").exists()
    videos_in_order = [line.split(",")[0] for line in printed.splitlines()[1:]]
    assert videos_in_order == sorted(videos_in_order) and len(videos_in_order) == len(key)
    assert main(["evaluate", str(tmp_path / "pairs.csv"), "--key", str(tmp_path / "key.csv"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["one_to_one"] <= 1.0 and "top5" in metrics and metrics["pairs"] == len(key)


def test_cli_says_its_version(capsys):
    import avmatch

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"avmatch {avmatch.__version__}"


def test_every_subcommand_help_gives_defaults_and_an_example(capsys):
    from avmatch.cli import EXAMPLES, build_parser, has_default

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(EXAMPLES)
    for name, command in commands.items():
        text = command.format_help()
        assert f"example:\n  {EXAMPLES[name]}" in text, name
        text = "".join(text.split())  # whatever the line breaks (argparse also wraps at hyphens)
        for action in command._actions:  # an option with a default says it, a default of 0 too
            if has_default(action):
                assert f"default:{action.default}" in text or "default" in (action.help or ""), (name, action.dest)
    assert "(default: auto)" in commands["match"].format_help() and "(default: 5)" in commands["search"].format_help()
    for name in ("make-features", "demo"):  # --seed 0
        assert "(default: 0)" in commands[name].format_help(), name
    assert has_default(next(a for a in commands["train"]._actions if a.dest == "ddp"))
    assert "-q, --quiet" in parser.format_help()


def test_models_lists_every_model_and_named_recipe_in_words_a_newcomer_can_place(capsys):
    from avmatch.models import list_models
    from avmatch.training import named_recipes

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    starts = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {m.name for m in list_models()} <= starts
    assert set(named_recipes()) <= starts and "report" in starts
    assert "'the report':" in out  # what "the report" in the summaries is
    assert "course starter" not in out and "the text's" not in out  # references nobody told the reader of


def test_quiet_turns_the_bars_and_notes_off_and_a_missing_cuda_device_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AVMATCH_QUIET", "")  # not quiet; and the -q below, which sets it, is undone after
    write_corpus(make_feature_corpus(40, min_len=5, max_len=9, seed=0, **DIMS), tmp_path / "train")
    assert main(["train", str(tmp_path / "train"), "-o", str(tmp_path / "run"), "--epochs", "1", "--no-histograms"]) == 0
    loud = capsys.readouterr().err
    assert "no --model given" in loud and "train dual" in loud  # a note and the training bar
    assert main(["-q", "train", str(tmp_path / "train"), "-o", str(tmp_path / "run2"), "--epochs", "1",
                 "--no-histograms", "--device", "cpu"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "best validation top-1" in quiet.out
    import torch

    if not torch.cuda.is_available():
        _one_line_error(capsys, ["match", str(tmp_path / "train"), str(tmp_path / "train"), "--model",
                                 str(tmp_path / "run"), "--device", "cuda"], "cuda", "--device cpu")
    _one_line_error(capsys, ["match", str(tmp_path / "train"), str(tmp_path / "train"), "--model",
                             str(tmp_path / "run"), "--device", "tpu"], "'tpu'")


def test_the_report_recipe_trains_its_model_its_way_and_gives_probabilities(tmp_path, capsys):
    """--recipe report: the report's lstm-cnn (concatenated sequences, ReLU after the residual sums)
    with BCE, plain Adam at a constant rate and every layer's diagnostics every 10 steps; match
    writes the sigmoid probability of each chosen pair."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    corpus = make_feature_corpus(60, min_len=5, max_len=9, seed=4, **DIMS)
    write_corpus(corpus, tmp_path / "train")
    videos, audios, _key = shuffle_for_matching(make_feature_corpus(12, min_len=5, max_len=9, seed=5, **DIMS), seed=1)
    write_corpus(videos, tmp_path / "videos")
    write_corpus(audios, tmp_path / "audios")
    assert main(["train", str(tmp_path / "train"), "-o", str(tmp_path / "run"), "--recipe", "report",
                 "--epochs", "2", "--batch-size", "4"]) == 0
    assert capsys.readouterr().out.startswith("lstm-cnn: best validation top-1")
    run = load_trained(tmp_path / "run" / "last.pt")
    assert run.model.config["interleave"] is False and run.model.config["residual_relu"] is True
    assert run.model.video.relu and run.model.audio.relu
    group = run.extra["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0 and group["lr"] == 1e-3  # plain Adam, constant rate after 2 epochs
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"histograms": 0}).Reload()
    steps = len(events.Scalars("loss/total"))
    for layer in ("layers.0.conv", "layers.1.conv", "layers.2.conv"):  # one tag per layer, every 10 steps
        assert [e.step for e in events.Histograms(f"outputs/{layer}")] == list(range(0, steps, 10)) and steps > 20
    assert main(["match", str(tmp_path / "videos"), str(tmp_path / "audios"), "--model", str(tmp_path / "run"),
                 "-o", str(tmp_path / "pairs.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "pairs.csv")))
    assert len(rows) == 12 and all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)
    _one_line_error(capsys, ["train", str(tmp_path / "train"), "-o", str(tmp_path / "run2"), "--recipe", "report",
                             "--model", "gru"], "'lstm-cnn'", "'gru'")
    _one_line_error(capsys, ["train", str(tmp_path / "train"), "-o", str(tmp_path / "run2"), "--recipe", "nope"],
                    "unknown recipe", "report")
    # plain lstm-cnn trains the report's way too, its sequences interleaved, diagnostics once an epoch
    assert main(["train", str(tmp_path / "train"), "-o", str(tmp_path / "plain"), "--model", "lstm-cnn",
                 "--epochs", "1", "--batch-size", "16", "--no-histograms"]) == 0
    plain = load_trained(tmp_path / "plain" / "last.pt")
    assert plain.model.config["interleave"] is True and plain.model.config["residual_relu"] is True
    assert plain.extra["optimizer"]["param_groups"][0]["weight_decay"] == 0


def test_cli_inspect_matches_the_reports_table(capsys):
    assert main(["inspect", "--model", "lstm-cnn"]) == 0
    out = capsys.readouterr().out
    for count in ("279,040", "49,664", "33,280", "104", "808", "3,216", "65"):
        assert count in out, out


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


def test_cli_bad_inputs_fail_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad"
    (bad / "clip1").mkdir(parents=True)
    np.save(bad / "clip1" / "vfeat.npy", np.zeros((5, 4, 3), np.float32))
    np.save(bad / "clip1" / "afeat.npy", np.zeros((5, 128), np.float32))
    _one_line_error(capsys, ["train", str(bad), "-o", str(tmp_path / "r")], "vfeat.npy")
    assert not (tmp_path / "r").exists()
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["train", str(tmp_path / "empty"), "-o", str(tmp_path / "r")], "empty")
    (tmp_path / "media").mkdir()  # media where features are wanted: told what to run
    (tmp_path / "media" / "clip.mp4").write_bytes(b"\0")
    _one_line_error(capsys, ["train", str(tmp_path / "media"), "-o", str(tmp_path / "r")], "media",
                    "holds media files, not features", "avmatch extract")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    _one_line_error(capsys, ["match", str(bad), str(bad), "--model", str(tmp_path / "junk.pt")], "junk.pt")


def test_checkpoint_of_another_model_is_refused(dual_run, tmp_path, capsys):
    run, _ = dual_run
    other = make_feature_corpus(6, min_len=5, max_len=6, video_dim=20, audio_dim=10, seed=1)
    write_corpus(other, tmp_path / "other")
    _one_line_error(capsys, ["match", str(tmp_path / "other"), str(tmp_path / "other"), "--model", str(run),
                             "-o", str(tmp_path / "p.csv")], "dims")
    assert not (tmp_path / "p.csv").exists()


def test_a_seed_gives_the_same_weights_every_time(tmp_path):
    """lstm-cnn's backward pass summed in a different order run to run on CPU (weights 3e-3 apart
    after two epochs, at the course's 1024/128 dims) until training asked PyTorch for its
    deterministic kernels; the caller's own setting is left as it was."""
    import torch

    corpus = make_feature_corpus(60, seed=1)
    cfg = TrainConfig(model="lstm-cnn", epochs=2, batch_size=16, seed=0, histograms=False, window_s=12.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs on one thread (conftest), where the order is fixed anyway
    try:
        runs = [train(corpus, tmp_path / name, cfg, progress=False) and load_trained(tmp_path / name) for name in "ab"]
    finally:
        torch.set_num_threads(threads)
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.are_deterministic_algorithms_enabled()


def test_resume_refuses_settings_the_run_was_not_started_with(small, tmp_path):
    """``--resume --epochs 40`` on a run of 2 epochs: refused in one line, not silently trained for 2."""
    import avmatch

    avmatch.train(small, tmp_path / "run", model="dual", epochs=2, batch_size=16, histograms=False, progress=False)
    with pytest.raises(AvmatchError, match=r"epochs 2 there, 40 asked.*new run"):
        avmatch.train(small, tmp_path / "run", resume=True, model="dual", epochs=40, progress=False)
    with pytest.raises(AvmatchError, match=r"model option hidden"):
        avmatch.train(small, tmp_path / "run", resume=True, model="dual", model_options={"hidden": 7}, progress=False)
    again = avmatch.train(small, tmp_path / "run", resume=True, model="dual", epochs=2, progress=False)
    assert again.metrics["epochs"] == 2  # the same settings: resumed (here: already finished)


def test_a_progress_bar_in_a_log_writes_whole_lines_now_and_then(capsys):
    """Not a terminal: no carriage-return redraws, and no line per step although the figures beside
    the bar change every step (set_postfix redrew it each time)."""
    from avmatch.progress import bar

    progress = bar(5000, "train", "step")
    for i in range(5000):
        progress.update(1)
        progress.set_postfix(loss=f"{i:.3f}")
    progress.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert 1 <= len([line for line in err.splitlines() if line.strip()]) <= 3


def test_gradient_clipping_caps_the_norm_of_every_step(tmp_path, monkeypatch):
    """--clip-grad: the gradient the optimiser applies never has a norm above the cap (the text's advice
    against exploding gradients), and without a cap it does exceed it here."""
    from avmatch.testing.featuregen import make_feature_corpus

    corpus = make_feature_corpus(24, video_dim=12, audio_dim=6, min_len=4, max_len=8, seed=2)
    seen: list[float] = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        grads = [p.grad.detach().flatten() for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.cat(grads).norm()))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    base = {"model": "dual", "epochs": 2, "batch_size": 8, "histograms": False, "lr": 1e-2,
            "model_options": {"hidden": 16, "embed_dim": 8}}
    train(corpus, tmp_path / "capped", TrainConfig(**base, clip_grad=1e-3), progress=False)
    assert seen and max(seen) <= 1e-3 * (1 + 1e-4)
    seen.clear()
    train(corpus, tmp_path / "free", TrainConfig(**base, clip_grad=0.0), progress=False)
    assert max(seen) > 1e-3


def test_a_flag_of_the_training_config_takes_true_or_false_only():
    from avmatch.errors import AvmatchError
    from avmatch.training import TrainConfig

    assert TrainConfig(centre_clips=True).centre_clips
    for name in ("centre_clips", "histograms"):
        with pytest.raises(AvmatchError, match=f"training option {name} is 'yes': give true or false"):
            TrainConfig(**{name: "yes"})
