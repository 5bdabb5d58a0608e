"""avmatch mux: videos written back with their audio, in sync, the video stream copied."""

import av
import numpy as np
import pytest

from avmatch.cli import main
from avmatch.demo import scenes
from avmatch.errors import AvmatchError
from avmatch.media import read_audio, write_media
from avmatch.testing.mediagen import shift_audio

RATE = scenes.SAMPLE_RATE


def lag_s(a: np.ndarray, b: np.ndarray, rate: int, max_s: float = 1.0) -> float:
    """Seconds by which ``b`` lags ``a`` (the peak of their cross-correlation within ±max_s)."""
    n = min(len(a), len(b))
    k = int(max_s * rate)
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    best = max(range(-k, k + 1), key=lambda d: float(np.dot(a[max(0, -d) : n - max(0, d)], b[max(0, d) : n - max(0, -d)])))
    return best / rate


@pytest.fixture(scope="module")
def scene():
    return scenes.make_scene([5, 1], "bounce", duration_s=12.0, size=(48, 48))


def test_mux_puts_a_matched_audio_back_in_sync(scene, tmp_path):
    """A pair's audio shifted by 0.4 s comes back in sync: the muxed sound matches the scene's own
    within 20 ms, and the video packets are the silent file's, copied."""
    frames, audio = scene.frames[:100], scene.audio[: 4 * RATE]
    write_media(tmp_path / "videos" / "v1.mp4", frames, None)
    write_media(tmp_path / "audios" / "a1.wav", None, shift_audio(audio, 0.4, RATE, np.random.default_rng(0)))
    (tmp_path / "pairs.csv").write_text("video,audio,score,margin,offset_s\nv1,a1,1,1,0.4\n")
    assert main(["mux", str(tmp_path / "pairs.csv"), str(tmp_path / "videos"), str(tmp_path / "audios"),
                 "-o", str(tmp_path / "out")]) == 0
    out = tmp_path / "out" / "v1.mp4"
    back = read_audio(out, RATE)
    assert abs(len(back) / RATE - 4.0) < 0.1
    assert abs(lag_s(audio, back, RATE)) <= 0.020
    with av.open(str(out)) as a, av.open(str(tmp_path / "videos" / "v1.mp4")) as b:
        got = [bytes(p) for p in a.demux(a.streams.video[0]) if p.size]
        want = [bytes(p) for p in b.demux(b.streams.video[0]) if p.size]
    assert got == want  # copied, not re-encoded
    # a rerun keeps what is there
    assert main(["mux", str(tmp_path / "pairs.csv"), str(tmp_path / "videos"), str(tmp_path / "audios"),
                 "-o", str(tmp_path / "out")]) == 0


def test_mux_cuts_a_placed_clip_out_of_its_recording(scene, tmp_path, capsys):
    write_media(tmp_path / "rec" / "day.flac", None, scene.audio)
    write_media(tmp_path / "clips" / "take.mp4", scene.frames[150:250], None)  # 6.0 s .. 10.0 s
    write_media(tmp_path / "clips" / "lost.mp4", scene.frames[:50], None)
    (tmp_path / "placements.csv").write_text("clip,recording,start_s,end_s,score,z,confidence,best_recording\n"
                                             "take,day,6.0,10.0,0.6,7,1,day\nlost,,1.0,3.0,0.3,2,0.1,day\n"
                                             "ghost,day,1.0,5.0,0.6,7,1,day\n")
    assert main(["mux", str(tmp_path / "placements.csv"), str(tmp_path / "clips"), str(tmp_path / "rec"),
                 "-o", str(tmp_path / "out")]) == 0
    back = read_audio(tmp_path / "out" / "take.mp4", RATE)
    assert abs(lag_s(scene.audio[6 * RATE : 10 * RATE], back, RATE)) <= 0.020
    assert not (tmp_path / "out" / "lost.mp4").exists()  # refused placements have no audio to add
    failed = (tmp_path / "out" / "failed.csv").read_text()
    assert "ghost" in failed and "no video file" in failed
    said = capsys.readouterr().out
    assert said.startswith("wrote 1 video with its audio") and "1 failed" in said
    assert "skipped 1 that" in said and said.rstrip().endswith(": lost")  # the refused take, named


def test_mux_refuses_a_file_that_is_no_result(tmp_path):
    from avmatch.mux import read_jobs

    (tmp_path / "x.csv").write_text("name,value\na,1\n")
    with pytest.raises(AvmatchError, match="neither a pairs.csv"):
        read_jobs(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text("video,audio,offset_s\nv,a,nan\n")
    with pytest.raises(AvmatchError, match="not a finite number"):
        read_jobs(tmp_path / "y.csv")


def _mux_setup(scene, tmp_path, offset_s: float = 0.0):
    write_media(tmp_path / "videos" / "v1.mp4", scene.frames[:50], None)
    write_media(tmp_path / "audios" / "a1.wav", None, scene.audio[: 2 * RATE])
    write_media(tmp_path / "audios" / "a2.wav", None, scene.audio[6 * RATE : 8 * RATE])
    (tmp_path / "pairs.csv").write_text(f"video,audio,offset_s\nv1,a1,{offset_s}\n")
    return ["mux", str(tmp_path / "pairs.csv"), str(tmp_path / "videos"), str(tmp_path / "audios")]


def test_mux_never_writes_into_an_input_folder(scene, tmp_path, capsys):
    args = _mux_setup(scene, tmp_path)
    for out in ("videos", "audios", "videos/sub"):
        assert main([*args, "-o", str(tmp_path / out)]) == 2
        assert "input folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "videos").rglob("*")) == ["v1.mp4"]


def test_mux_rerun_after_the_pairs_changed_writes_the_new_audio(scene, tmp_path):
    args = _mux_setup(scene, tmp_path)
    out = tmp_path / "out"
    assert main([*args, "-o", str(out)]) == 0
    first = read_audio(out / "v1.mp4", RATE)
    assert abs(lag_s(scene.audio[: 2 * RATE], first, RATE)) <= 0.020
    (tmp_path / "pairs.csv").write_text("video,audio,offset_s\nv1,a2,0.0\n")  # the user corrected a pair
    assert main([*args, "-o", str(out)]) == 0
    second = read_audio(out / "v1.mp4", RATE)
    want = scene.audio[6 * RATE : 8 * RATE]
    n = min(len(want), len(second))
    assert np.corrcoef(want[:n], second[:n])[0, 1] > 0.9  # the new audio, not the old one kept


def test_mux_keeps_what_it_did_not_write(scene, tmp_path):
    args = _mux_setup(scene, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "v1.mp4").write_bytes(b"the user's own file")
    (out / "failed.csv").write_text("the user's own failed.csv\n")
    main([*args, "-o", str(out)])
    assert (out / "v1.mp4").read_bytes() == b"the user's own file"
    (out / "v1.mp4").unlink()
    assert main([*args, "-o", str(out)]) == 0 and (out / "v1.mp4").stat().st_size > 1000
    (out / "failed.csv").write_text("the user's own failed.csv\n")
    assert main([*args, "-o", str(out)]) == 0
    assert (out / "failed.csv").read_text() == "the user's own failed.csv\n"


def test_mux_refuses_an_offset_that_leaves_the_track_silent_and_a_wild_drift(scene, tmp_path):
    args = _mux_setup(scene, tmp_path, offset_s=-5.0)  # audio from 5 s of a 2 s file
    assert main([*args, "-o", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out" / "v1.mp4").exists()
    assert "wholly outside" in (tmp_path / "out" / "failed.csv").read_text()
    from avmatch.mux import read_jobs

    (tmp_path / "d.csv").write_text("video,audio,offset_s,drift_ppm\nv1,a1,0,1e12\n")
    with pytest.raises(AvmatchError, match="drift_ppm"):
        read_jobs(tmp_path / "d.csv")
