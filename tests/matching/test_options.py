"""MatchOptions: one name per option from the command line to the code, checked when made."""

import dataclasses

import pytest

from avmatch.cli import build_parser, match_options
from avmatch.errors import AvmatchError
from avmatch.matching import MODES, MatchOptions
from avmatch.matching.dense import NORMALISATIONS
from avmatch.outputs import FORMATS


@pytest.mark.parametrize("fields, says", [
    ({"mode": "fast"}, "unknown matching mode 'fast'; use one of: auto, dense, two-stage"),
    ({"normalise": "softmax"}, "unknown score normalisation 'softmax'; use dual-softmax or none"),
    ({"min_confidence": 1.5}, "--min-confidence must be in [0, 1], got 1.5"),
    ({"retrieval": "lsh"}, "unknown index kind 'lsh'"),
    ({"cluster": "tcp://127.0.0.1:1"}, "--cluster is for the index's shards: give their number with --shards"),
    ({"shard_dir": "keep"}, "--shard-dir is for the index's shards: give their number with --shards"),
])
def test_a_bad_option_is_one_line_when_made(fields, says):
    with pytest.raises(AvmatchError, match=says.replace("[", r"\[").replace("]", r"\]")):
        MatchOptions(**fields)


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MatchOptions().mode = "dense"


def test_the_command_line_fills_every_option_it_has_by_name():
    args = build_parser().parse_args(["match", "v", "a", "--greedy", "--normalise", "none", "--max-offset", "2.5",
                                      "--min-confidence", "0.5", "--mode", "two-stage", "--candidates", "7",
                                      "--retrieval", "flat", "--shards", "2", "--cluster", "--workers", "3"])
    assert match_options(args) == MatchOptions(greedy=True, normalise="none", max_offset_s=2.5, min_confidence=0.5,
                                               mode="two-stage", candidates=7, retrieval="flat", shards=2,
                                               cluster="", workers=3)
    defaults = match_options(build_parser().parse_args(["match", "v", "a"]))
    assert defaults == MatchOptions(workers=1)  # the command line's one extraction process


def test_the_command_lines_choices_are_the_registries():
    """The parser lists them itself (importing avmatch.matching would cost `avmatch --help` seconds):
    this keeps them the same."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["match"]
    choices = {a.dest: tuple(a.choices) for a in sub._actions if a.choices}
    assert choices["mode"] == MODES
    assert choices["normalise"] == NORMALISATIONS
    for command in ("match", "locate"):  # --format: the output writers' formats
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        assert next(tuple(a.choices) for a in sub._actions if a.dest == "format") == FORMATS
