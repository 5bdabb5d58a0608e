"""The users' media test set (avmatch.testing.usermedia) is what it says: every container, frame size
and audio format in its key, a variable frame rate that avmatch still reads at a constant one."""

import csv

import av
import numpy as np

from avmatch.demo import scenes
from avmatch.media import probe, read_video
from avmatch.testing.usermedia import CONTAINERS, SCALES, make_user_test_set


def test_user_media_are_the_sizes_containers_and_frame_timing_the_key_says(tmp_path):
    key_csv = make_user_test_set({"scenes": scenes.make_scene}, ["scenes:lamps", "scenes:bounce"], tmp_path, 12,
                                 seed=1, duration_s=2.0, size=(32, 18))
    rows = list(csv.DictReader(open(key_csv)))
    assert {r["container"] for r in rows} == {c.lstrip(".") for c in CONTAINERS}
    assert {r["size"] for r in rows} == {f"{32 * s}x{18 * s}" for s in SCALES}
    vfr = [r for r in rows if r["fps"].endswith("vfr")]
    assert vfr and all(r["container"] != "avi" for r in vfr)
    for r in rows:
        video = next((tmp_path / "videos").glob(r["video"] + ".*"))
        info = probe(video)
        assert f"{info.width}x{info.height}" == r["size"] and video.suffix == "." + r["container"]
        with av.open(str(video)) as c:
            times = np.array([float(f.time) for f in c.decode(video=0)])
        fps = float(r["fps"].split()[0])
        gaps = np.diff(times) * fps
        if r in vfr:  # frames dropped: some gaps of two frames or more, none shorter than one
            assert len(times) < round(2.0 * fps) and gaps.max() > 1.5 and gaps.min() > 0.9
        else:
            assert np.allclose(gaps, 1.0, atol=0.05)
        # decoded at a constant rate the stream lasts as long either way
        assert abs(len(read_video(video, fps=25.0, size=8, gray=True)) - 50) <= 2
        audio = next((tmp_path / "audios").glob(r["audio"] + ".*"))
        assert probe(audio).has_audio
