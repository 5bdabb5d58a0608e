"""Every reader on every bad input (see ``badinputs.py``): one clear line naming the file, exit status 2
from the CLI, a failed.csv row in a batch; never a traceback, a hang, or a pickle run."""

from __future__ import annotations

from collections import Counter

import pytest

from avmatch.cli import main, run_captured
from avmatch.testing.badinputs import exploit_marker, make_cases, run_all

KINDS = ("media", "npy", "corpus", "checkpoint", "scores")


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    cases = make_cases(root / "cases")
    return root, cases, run_all(cases, root / "work", run_captured)


def _report(outcomes) -> str:
    return "\n".join(f"{o.case.name} / {o.reader}: {o.outcome}: {o.detail}" for o in outcomes)


@pytest.mark.parametrize("kind", KINDS)
def test_every_reader_handles_every_bad_input(bad, kind):
    _, cases, outcomes = bad
    mine = [o for o in outcomes if o.case.kind == kind]
    assert len({o.case.name for o in mine}) == sum(c.kind == kind for c in cases)
    failed = [o for o in mine if not o.handled]
    assert not failed, "\n" + _report(failed)
    # each case meets at least one reader that refuses it, unless it is meant to be readable
    for case in {o.case.name: o.case for o in mine}.values():
        got = Counter(o.outcome for o in mine if o.case is case)
        if case.expect == "error":
            assert got["error"], f"{case.name}: no reader refused it"


def test_batch_extraction_lists_each_bad_file_once_in_failed_csv(bad):
    _, cases, outcomes = bad
    batch = {o.case.name: o for o in outcomes if o.reader == "batch extract"}
    assert batch and all(o.handled for o in batch.values()), _report(batch.values())
    for name in ("zero-bytes.mp4", "text.mp4", "huge-dims.mkv", "time-jump.mkv", "subtitles-only.mkv"):
        assert batch[name].outcome == "error"
    for name in ("no-video.mp4", "one-frame.mp4"):
        assert batch[name].outcome == "ok"


def test_no_reader_ever_runs_a_pickle(bad):
    root, _, _ = bad
    assert not exploit_marker(root / "cases").exists()


@pytest.mark.parametrize("case, reader, fragment", [
    ("zero-bytes.mp4", "probe", "empty file"),
    ("text.mp4", "read_audio", "not a readable media file"),
    ("huge-dims.mkv", "read_video", "12000x12000"),
    ("time-jump.mkv", "extract_file", "by its header"),
    ("subtitles-only.mkv", "probe", "neither a video nor an audio stream"),
    ("no-audio.m4a", "cli extract", "no audio stream"),
    ("npy-object-array", "load_array", "pickled"),
    ("npy-huge-shape", "load_array", "truncated or corrupt"),
    ("npy-float64-overflow", "load_corpus", "too large for float32"),
    ("npy-int64", "cli train", "dtype int64"),
    ("manifest-dotdot", "load_corpus", "leaves the corpus folder"),
    ("manifest-absolute", "cli train", "leaves the corpus folder"),
    ("manifest-symlink-out", "load_corpus", "through a link"),
    ("manifest-missing-file", "load_corpus", "missing feature file"),
    ("manifest-bad-json", "read_manifest", "line 3"),
    ("manifest-binary", "load_corpus", "not UTF-8"),
    ("list-dotdot", "load_corpus", "leaves the corpus folder"),
    ("ckpt-newer-format", "load_trained", "newer than this avmatch reads"),
    ("ckpt-unknown-model", "cli inspect", "does not have"),
    ("ckpt-other-model", "load_trained", "another model"),
    ("ckpt-missing-weights", "load_trained", "2 missing"),
    ("ckpt-wrong-shape", "load_trained", "has shape"),
    ("ckpt-plain-state-dict", "load_trained", "bare state_dict"),
    ("ckpt-torch-exploit", "load_trained", "could run code"),
])
def test_messages_say_what_is_wrong(bad, case, reader, fragment):
    _, _, outcomes = bad
    o = next(o for o in outcomes if o.case.name == case and o.reader == reader)
    assert o.outcome == "error" and fragment in o.detail, o.detail


def test_cli_single_file_errors_exit_2_with_one_line(bad, capsys):
    root, cases, _ = bad
    case = next(c for c in cases if c.name == "truncated-50.mp4")
    assert main(["extract", str(case.path), "-o", str(root / "single")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("avmatch:")]
    assert lines == [f"avmatch: error: {case.path}: not a readable media file (unknown format, or corrupt/truncated)"]
    assert "Traceback" not in err
    assert (root / "single" / "failed.csv").read_text().count("\n") == 2  # header + the file


def test_cli_unexpected_errors_are_one_line_too(monkeypatch, tmp_path, capsys):
    import avmatch.features.cache

    def boom(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(avmatch.features.cache, "load_corpus", boom)  # train reads with it
    assert main(["train", str(tmp_path), "-o", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ZeroDivisionError: a bug" in err and "AVMATCH_DEBUG" in err
    monkeypatch.setenv("AVMATCH_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["train", str(tmp_path), "-o", str(tmp_path / "r")])


def test_cli_system_errors_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["make-features", "-o", str(blocker / "sub"), "--clips", "4", "--video-dim", "4",
                 "--audio-dim", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("avmatch: error:") and "file" in err
