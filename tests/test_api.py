"""The public API: the README's Python example runs as written, on tiny generated corpora."""

import re
from pathlib import Path

import numpy as np
import pytest

import avmatch
from avmatch.corpus import write_corpus
from avmatch.demo.synthetic import make_feature_corpus, shuffle_for_matching, write_key

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    section = README.read_text().split("### Python\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    write_corpus(make_feature_corpus(48, video_dim=12, audio_dim=8, min_len=6, max_len=10, seed=1), tmp_path / "feats")
    videos, audios, key = shuffle_for_matching(make_feature_corpus(12, video_dim=12, audio_dim=8, min_len=6,
                                                                   max_len=10, seed=2), seed=3)
    write_corpus(videos, tmp_path / "test_videos")
    write_corpus(audios, tmp_path / "test_audios")
    write_key(key, tmp_path / "key.csv")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(python_example(), str(README), "exec"), scope)  # noqa: S102 - the README's own example

    assert isinstance(scope["model"], avmatch.Model) and scope["model"].name == "dual"
    result = scope["result"]
    assert isinstance(result, avmatch.Result) and len(result.pairs) == 12
    assert sorted(a for _, a in result.pairs) == sorted(a for _, a in key)  # one-to-one over every audio
    assert list(scope["columns"]) == ["video", "audio", "score", "margin", "confidence"]
    assert np.array_equal(scope["columns"]["video"], [v for v, _ in result.pairs])
    assert (tmp_path / "pairs.csv").exists() and (tmp_path / "pairs.scores.npz").exists()
    # the result judged in memory is the result judged from its files, and beats chance
    assert scope["metrics"] == avmatch.evaluate("pairs.csv", "key.csv") == avmatch.evaluate(result, dict(key))
    assert scope["metrics"]["normalised_top5"] > 5 / 12  # its raw top-5 here is 5/12, chance
    assert "one-to-one" in capsys.readouterr().out


def test_import_is_light_and_help_lists_the_api():
    import subprocess
    import sys

    code = "import sys, avmatch; print('torch' in sys.modules); help(avmatch)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("False")
    for name in ("extract", "train", "load", "evaluate", "Model"):
        assert re.search(rf"\b{name}\b", out)


def test_bad_api_arguments_are_one_line_errors_python_code_can_catch():
    import avmatch
    from avmatch.errors import AvmatchError

    model = avmatch.load("default")
    for call, says in ((lambda: avmatch.load(None), "run must be"),
                       (lambda: avmatch.train("feats", "run", bogus=1), "unknown training option(s) bogus"),
                       (lambda: model.match([], []), "videos must be"),
                       (lambda: model.locate("clips", "recordings", camera="("), "is not a regular expression")):
        with pytest.raises(AvmatchError, match=re.escape(says)) as caught:
            call()
        assert isinstance(caught.value, (TypeError, ValueError))
