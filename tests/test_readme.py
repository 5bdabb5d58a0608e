"""The README's examples run as written (on smaller sizes), so the guide cannot drift from the code.

The *Feature files* block runs line by line as ``avmatch`` commands, then the *Python* block runs in
the same folder; the *Quick start* and *Short clips inside long recordings* blocks run on generated
footage in the folders they name. Each substitution below makes one step smaller and must still find its text: a
README edit that drops it fails here, and the substitutions are then brought up to date.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
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
SMALLER_INDEX = {"avmatch index feats ": "avmatch index course ", "clip0042": "clip04"}  # make-features' ids
SMALLER_PYTHON = {"epochs=10": "epochs=1, model_options={'hidden': 16, 'embed_dim': 8}"}


def _block(heading: str, language: str, nth: int = 0) -> str:
    """The ``nth`` (from 0) ```language block after ``heading``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    for _ in range(nth + 1):
        start = text.index(f"```{language}\n", start) + len(f"```{language}\n")
    return text[start : text.index("```", start)]


def _smaller(text: str, table: dict[str, str]) -> str:
    for was, now in table.items():
        assert was in text, f"the README no longer has {was!r}: update {__name__}'s substitutions"
        text = text.replace(was, now)
    return text


def _run_commands(block: str, where: Path, monkeypatch) -> list[str]:
    """Each line of a README block (comments dropped) as an ``avmatch`` command run in ``where``, in this
    process (``avmatch.cli.run_captured``: a new process per line would cost seconds of imports each);
    each must succeed. Their outputs, in order."""
    from avmatch.cli import run_captured

    monkeypatch.chdir(where)
    monkeypatch.setenv("AVMATCH_QUIET", "1")
    monkeypatch.setenv("AVMATCH_CACHE", str(where / "cache"))  # media features cached here, not in ~/.cache
    outputs = []
    for command in filter(None, (line.split(" #")[0].strip() for line in block.splitlines())):
        argv = shlex.split(command)
        assert argv[0] == "avmatch", command
        status, out, err = run_captured(argv[1:])
        assert status == 0, f"{command}: {err[-500:]}"
        outputs.append(out)
    return outputs


def test_the_feature_files_and_python_examples_run_as_written(tmp_path, monkeypatch):
    _run_commands(_smaller(_block("## Feature files", "bash"), SMALLER_BASH), tmp_path, monkeypatch)
    assert "one_to_one" in (tmp_path / "cmp" / "compare.md").read_text()
    # *Large collections*' index and search, on the corpus and the (embedding) run just made
    found = _run_commands(_smaller(_block("## Large collections", "bash"), SMALLER_INDEX), tmp_path, monkeypatch)
    assert "recall" in found[0] and found[1].startswith("video,rank,audio,score\nclip04,1,")

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


# the quick start's and locate's folders, made of generated scenes; training one epoch
SMALLER_QUICK_START = {"avmatch train feats -o run ": "avmatch train feats -o run --epochs 1 "}


def _scenes(folder: Path, names: list[str], seconds: float, video: bool, audio: bool, first: int = 0) -> list:
    """Generated scenes of four families written as ``folder/NAME.mp4`` (with ``audio``: its sound
    too) or, for audio alone, ``folder/NAME.wav``; the scenes, in order."""
    from avmatch.demo import scenes
    from avmatch.media import write_media

    made = []
    for i, name in enumerate(names):
        scene = scenes.make_scene([first + i, 25], ("bounce", "lamps", "talker", "motor")[i % 4], duration_s=seconds,
                                  size=(48, 48))
        write_media(folder / f"{name}.{'mp4' if video else 'wav'}", scene.frames if video else None,
                    scene.audio if audio else None, fps=scene.fps, sample_rate=scene.sample_rate)
        made.append(scene)
    return made


def test_the_quick_start_runs_as_written(tmp_path, monkeypatch):
    """Both *Quick start* blocks, in order, on footage of one's own: four silent videos and their audios
    under other names, twelve paired clips, the key."""
    from avmatch.media import write_media

    shown = _scenes(tmp_path / "silent_videos", [f"v{i}" for i in range(4)], 4.0, video=True, audio=False)
    for i, scene in enumerate(shown):
        write_media(tmp_path / "audios" / f"a{3 - i}.wav", None, scene.audio, sample_rate=scene.sample_rate)
    (tmp_path / "key.csv").write_text("video,audio\n" + "".join(f"v{i},a{3 - i}\n" for i in range(4)))
    _scenes(tmp_path / "paired_clips", [f"p{i:02d}" for i in range(12)], 3.0, video=True, audio=True, first=100)
    _run_commands(_block("## Quick start", "bash", 0), tmp_path, monkeypatch)
    assert len(list((tmp_path / "with_sound").glob("v*.mp4"))) == 4 and (tmp_path / "report.html").is_file()
    said = _run_commands(_smaller(_block("## Quick start", "bash", 1), SMALLER_QUICK_START), tmp_path, monkeypatch)
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "judged.png").is_file()
    assert "one_to_one" in said[-1]


def test_the_locate_block_runs_as_written(tmp_path, monkeypatch):
    """*Short clips inside long recordings*, in order: takes cut from two long recordings (one camera
    folder each), then audio snippets cut from two long silent videos."""
    from avmatch.media import write_media

    long = _scenes(tmp_path / "recordings", ["day", "night"], 40.0, video=False, audio=True)
    for r, scene in enumerate(long):
        for start in (5, 25):
            write_media(tmp_path / "takes" / f"cam{r}" / f"t{start}.mp4", scene.frames[start * 25 : (start + 6) * 25],
                        None, fps=scene.fps)
    films = _scenes(tmp_path / "silent_videos", ["film0", "film1"], 40.0, video=True, audio=False, first=50)
    for r, scene in enumerate(films):
        rate = scene.sample_rate
        write_media(tmp_path / "snippets" / f"s{r}.wav", None, scene.audio[10 * rate : 16 * rate], sample_rate=rate)
    _run_commands(_block("## Short clips inside long recordings", "bash"), tmp_path, monkeypatch)
    assert (tmp_path / "timeline.html").is_file() and (tmp_path / "with_sound" / "mux.json").is_file()
    rows = (tmp_path / "placements.csv").read_text().splitlines()
    assert rows[0].startswith("clip,recording,") and {r.split(",")[0] for r in rows[1:]} == {"s0", "s1"}
