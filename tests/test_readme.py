"""The README's examples run as written (on smaller sizes), so the guide cannot drift from the code.

The *Feature files* block runs line by line as ``avmatch`` commands, then the *Python* block runs in
the same folder. Each substitution below makes one step smaller and must still find its text: a
README edit that drops it fails here, and the substitutions are then brought up to date.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import avmatch

README = Path(__file__).resolve().parents[1] / "README.md"

# text in the README -> the smaller step the test runs
SMALLER_BASH = {
    "--clips 300": "--clips 40 --video-dim 64 --audio-dim 16",
    "--test 30": "--test 8",
    "--model dual ": "--model dual --epochs 1 --option hidden=16 --option embed_dim=8 ",
    "-o cmp": "-o cmp --epochs 1",
}
SMALLER_PYTHON = {"epochs=10": "epochs=1, model_options={'hidden': 16, 'embed_dim': 8}"}


def _block(heading: str, language: str) -> str:
    """The first ```language block after ``heading``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"```{language}\n", text.index(heading)) + len(f"```{language}\n")
    return text[start : text.index("```", start)]


def _smaller(text: str, table: dict[str, str]) -> str:
    for was, now in table.items():
        assert was in text, f"the README no longer has {was!r}: update {__name__}'s substitutions"
        text = text.replace(was, now)
    return text


def test_the_feature_files_and_python_examples_run_as_written(tmp_path):
    commands = [line.split(" #")[0].strip() for line in _smaller(_block("## Feature files", "bash"),
                                                                  SMALLER_BASH).splitlines()]
    env = dict(os.environ, AVMATCH_QUIET="1")
    for command in filter(None, commands):
        argv = shlex.split(command)
        assert argv[0] == "avmatch", command
        done = subprocess.run([sys.executable, "-m", "avmatch", *argv[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}: {done.stderr[-500:]}"
    assert "one_to_one" in done.stdout or (tmp_path / "cmp" / "compare.md").is_file()

    code = _smaller(_block("## Python", "python"), SMALLER_PYTHON)
    printed = io.StringIO()
    here = os.getcwd()
    try:
        os.chdir(tmp_path)
        for _ in range(2):  # a notebook runs a cell again: the example must allow it
            scope: dict = {}
            with contextlib.redirect_stdout(printed):
                exec(compile(code, "README.md (Python)", "exec"), scope)
        assert printed.getvalue().count("one-to-one ") == 2
        assert isinstance(scope["model"], avmatch.Model) and scope["model"].name == "dual"
        result, key = scope["result"], dict(line.split(",") for line in
                                            Path("course/test/key.csv").read_text().splitlines()[1:])
        assert isinstance(result, avmatch.Result) and len(result.pairs) == len(key) == 8
        assert sorted(a for _, a in result.pairs) == sorted(key.values())  # one-to-one over every audio
        assert list(scope["columns"]) == ["video", "audio", "score", "margin", "confidence"]
        assert Path("pairs-py.csv").exists() and Path("pairs-py.scores.npz").exists()
        # the result judged in memory is the result judged from its files
        assert scope["metrics"] == avmatch.evaluate("pairs-py.csv", "course/test/key.csv") == avmatch.evaluate(result, key)
    finally:
        os.chdir(here)
