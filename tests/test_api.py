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
                       (lambda: model.locate("clips", "recordings", camera="("), "is not a regular expression")):
        with pytest.raises(AvmatchError, match=re.escape(says)) as caught:
            call()
        assert isinstance(caught.value, (TypeError, ValueError))
