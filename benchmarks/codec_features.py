"""How far each audio format moves the ``default`` extractor's audio features, beside how far the
training augmentation moves them. Prints a table; asserts nothing.

    python benchmarks/codec_features.py [--clips 12] [--families scenes:lamps,scenes:speech,worlds:drums,worlds:keys]

For each clip (4 s, the given families of both generators, in turn) the sound is written as wav and
in every format of ``avmatch.testing.formats.FORMATS``, each file is read back through the extractor,
and its features are compared with the wav's, row by row: the mean |difference| of the 40 log-mel
band columns (all bands, and the top 5), and the correlation over time of the onset-strength column
(the feature that carries *when*). The row ``augmented`` does the same for the wav's features re-recorded
by ``augment_audio`` (what training shows the model), one draw per clip. A format whose onset
correlation lies below the augmentation's is one the training does not prepare the model for: the
place to look when a format scores below wav in benchmarks/generalise.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from avmatch.demo import scenes, worlds
from avmatch.features import get_extractor
from avmatch.features.frames import MEL_BANDS
from avmatch.testing.formats import FORMATS, write_format

ONSET = MEL_BANDS  # the onset-strength column follows the bands


def distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    bands = np.abs(a[:, :MEL_BANDS] - b[:, :MEL_BANDS])
    onset = np.corrcoef(a[:, ONSET], b[:, ONSET])[0, 1] if a[:, ONSET].std() > 0 and b[:, ONSET].std() > 0 else np.nan
    return float(bands.mean()), float(bands[:, -5:].mean()), float(onset)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--families", default="scenes:lamps,scenes:speech,worlds:drums,worlds:keys")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    generators = {"scenes": scenes, "worlds": worlds}
    families = [f.split(":") for f in args.families.split(",") if f]
    extractor = get_extractor("default")
    rng = np.random.default_rng(args.seed)
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in [*FORMATS, "augmented"]}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.clips):
            gen, family = families[i % len(families)]
            scene = generators[gen].make_scene([args.seed, i], family, duration_s=4.0, size=(48, 48))
            wav = extractor.audio(write_format(scene.audio, scene.sample_rate, Path(tmp) / f"c{i}", "wav"))
            for name in FORMATS:
                path = write_format(scene.audio, scene.sample_rate, Path(tmp) / f"c{i}-{name}", name,
                                    np.random.default_rng([args.seed, i]))
                rows[name].append(distance(wav, extractor.audio(path)))
            rows["augmented"].append(distance(wav, extractor.augment_audio(wav, rng)))
    print(f"{args.clips} clips of {args.families}; features against the wav's")
    print(f"{'format':12s} {'bands |d|':>10s} {'top-5 |d|':>10s} {'onset corr':>11s} {'(worst)':>8s}")
    for name, got in rows.items():
        x = np.array(got)
        print(f"{name:12s} {x[:, 0].mean():10.3f} {x[:, 1].mean():10.3f} {np.nanmean(x[:, 2]):11.3f} {np.nanmin(x[:, 2]):8.3f}")


if __name__ == "__main__":
    main()
