"""The public API (the README's Python example runs in tests/test_readme.py)."""

import re

import pytest

import avmatch


def test_import_is_light_and_help_lists_the_api():
    import subprocess
    import sys

    code = "import sys, avmatch; print('torch' in sys.modules); help(avmatch)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("False")
    for name in ("extract", "train", "load", "evaluate", "Model"):
        assert re.search(rf"\b{name}\b", out)


def test_bad_api_arguments_are_one_line_errors_python_code_can_catch():
    from avmatch.errors import AvmatchError

    model = avmatch.load("default")
    for call, says in ((lambda: avmatch.load(None), "run must be"),
                       (lambda: avmatch.train("feats", "run", bogus=1), "unknown training option(s) bogus"),
                       (lambda: model.match([], []), "videos must be"),
                       (lambda: model.match("v", "a", bogus=1), "unknown matching option(s) bogus"),
                       (lambda: model.locate("clips", "recordings", camera="("), "is not a regular expression")):
        with pytest.raises(AvmatchError, match=re.escape(says)) as caught:
            call()
        assert isinstance(caught.value, (TypeError, ValueError))


def test_training_into_a_run_again_says_the_keywords_that_allow_it(tmp_path):
    """A notebook cell run twice: the refusal names the keywords (resume=True, force=True), not only the
    command line's flags, and force=True then trains again."""
    from avmatch.corpus import write_corpus
    from avmatch.errors import AvmatchError
    from avmatch.testing.featuregen import make_feature_corpus

    write_corpus(make_feature_corpus(12, video_dim=6, audio_dim=4, min_len=3, max_len=5), tmp_path / "feats")
    settings = {"model": "dual", "epochs": 1, "histograms": False, "model_options": {"hidden": 8, "embed_dim": 4},
                "progress": False}
    avmatch.train(tmp_path / "feats", tmp_path / "run", **settings)
    with pytest.raises(AvmatchError, match=r"resume=True.*force=True"):
        avmatch.train(tmp_path / "feats", tmp_path / "run", **settings)
    assert avmatch.train(tmp_path / "feats", tmp_path / "run", force=True, **settings).name == "dual"


def test_videos_and_audios_given_the_wrong_way_round_are_said_before_any_extraction(media, tmp_path, capsys,
                                                                                   monkeypatch):
    """match AUDIOS VIDEOS (or locate RECORDINGS CLIPS): one line naming the folder and the right
    order, and nothing extracted (no cache written)."""
    import shutil

    from avmatch.cli import main

    (tmp_path / "videos").mkdir()
    (tmp_path / "audios").mkdir()
    shutil.copy(media.clip("clip.mp4"), tmp_path / "videos" / "v.mp4")
    shutil.copy(media.audio("tone.wav"), tmp_path / "audios" / "a.wav")
    cache = tmp_path / "cache"
    monkeypatch.setenv("AVMATCH_CACHE", str(cache))
    assert main(["match", str(tmp_path / "audios"), str(tmp_path / "videos"), "-o", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "VIDEOS holds audio files only (.wav)" in err and "avmatch match VIDEOS AUDIOS" in err
    assert str(tmp_path / "audios") in err and len(err.strip().splitlines()) == 1
    assert main(["locate", str(tmp_path / "audios"), str(tmp_path / "videos")]) == 2
    assert "avmatch locate CLIPS RECORDINGS" in capsys.readouterr().err
    assert not cache.exists() or not any(cache.rglob("*.npy"))
