"""Fetch the real recordings the scene generators use (``avmatch.demo.recordings``), once.

    python benchmarks/fetch_recordings.py [-o DIR] [--sources a,b]

Downloads Debian packages that ship recorded speech and impacts (``apt-get download``: no install,
no root), keeps each source as ``DIR/<source>.npz`` (16 kHz mono) beside its licence, and prints what
it stored. DIR defaults to ``$AVMATCH_RECORDINGS`` or ``~/.cache/avmatch/recordings``. The audio is
never committed; the packages reserved for independent evaluation are refused.
"""

from __future__ import annotations

import argparse

from avmatch.demo import recordings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=None, help="folder (default: %(default)s → the default folder)")
    parser.add_argument("--sources", default=",".join(recordings.SOURCES), help="comma-separated sources")
    args = parser.parse_args()
    for path in recordings.fetch(args.output, [s for s in args.sources.split(",") if s]):
        print(path)


if __name__ == "__main__":
    main()
