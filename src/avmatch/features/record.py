"""The extractor record: how a corpus's features were made, as its ``corpus.json``, a checkpoint and the
media cache's key keep it. On disk it is a plain table (``to_dict``); this module is the only code that
reads its fields from that table (``from_dict``), and the one place that says what two records
differing means for a model, which options of a recorded extractor name files, and how a checkpoint's
record is checked before anything is built.

A field that is None was not recorded (a classic corpus records a name and a version only, a checkpoint
with no extractor nothing; a key written as null reads the same); ``to_dict`` writes back the keys and
values ``from_dict`` read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avmatch.errors import AvmatchError

if TYPE_CHECKING:
    from avmatch.features import Extractor

# the record's keys in the order an extractor writes them; any other key is kept as written (``extra``)
FIELDS = ("name", "version", "params", "video_rate_hz", "audio_rate_hz", "video_dim", "audio_dim", "weights_sha1")


@dataclass(frozen=True)
class ExtractorRecord:
    """Name, version and options of the extractor that made some features (see the module's note)."""

    name: str | None = None  # the registry name (avmatch.features.list_extractors)
    version: int | None = None  # the extractor's version then: features of another version do not fit
    params: dict[str, Any] | None = None  # the options it was built with, plain values
    video_rate_hz: float | None = None  # rows a second of each modality's features
    audio_rate_hz: float | None = None
    video_dim: int | None = None  # columns of each modality's features
    audio_dim: int | None = None
    weights_sha1: dict[str, str] | None = None  # modality -> SHA-1 of the user's network file (pretrained)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this avmatch does not know, kept as written

    @classmethod
    def from_dict(cls, record: Mapping[str, Any] | None) -> ExtractorRecord:
        """The record a table on disk holds (values as written, unchecked; see :func:`check_record`)."""
        if not isinstance(record, Mapping | None):
            raise TypeError(f"an extractor record is a table, not a {type(record).__name__}")
        record = dict(record or {})
        known = {k: record.pop(k) for k in FIELDS if k in record}
        for key in ("params", "weights_sha1"):
            if isinstance(known.get(key), dict):
                known[key] = dict(known[key])
        return cls(**known, extra=record)

    def to_dict(self) -> dict[str, Any]:
        """The table on disk: the recorded keys, in the order an extractor writes them."""
        out = {k: getattr(self, k) for k in FIELDS if getattr(self, k) is not None}
        for key in ("params", "weights_sha1"):
            if isinstance(out.get(key), dict):
                out[key] = dict(out[key])
        return {**out, **self.extra}

    def _registered(self) -> type[Extractor] | None:
        """The registered extractor class of this name, at any version; None if avmatch has none."""
        from avmatch.features import _REGISTRY

        return _REGISTRY.get(self.name) if isinstance(self.name, str) else None

    def _current(self) -> type[Extractor] | None:
        """The registered extractor that made these features, at its current version; else None."""
        cls = self._registered()
        return cls if cls is not None and self.version == cls.version else None

    @property
    def file_options(self) -> tuple[str, ...]:
        """The options of this extractor that name a file (a network), which only the user names."""
        return tuple(getattr(self._registered(), "file_options", ()))

    @property
    def video_maps(self) -> list[int] | None:
        """The map layout (:attr:`Extractor.video_maps`) of these features; None where they hold no
        maps or come from another or unknown extractor or version."""
        cls = self._current()
        return list(cls.video_maps) if cls is not None and cls.video_maps is not None else None

    @property
    def recipe(self) -> str:
        """The training recipe (:attr:`Extractor.recipe`) that suits these features; "" for other or
        unknown extractors and versions."""
        cls = self._current()
        return cls.recipe if cls is not None else ""

    def same_settings(self, other: ExtractorRecord) -> bool:
        """Made by the same extractor with the same options (what one corpus folder may hold)."""
        return (self.name, self.params) == (other.name, other.params)

    def build(self) -> Extractor:
        """The extractor this record names, with its options (AvmatchError if avmatch has none such)."""
        from avmatch.features import get_extractor

        return get_extractor("" if self.name is None else self.name, **(self.params or {}))

    def mismatch(self, features: ExtractorRecord) -> str:
        """'' when features made as ``features`` records fit a run trained on features made as this
        record says, else what differs (options that name a file aside: their SHA-1 decides)."""
        if not self.name or not features.name:
            return ""
        for key in ("name", "version"):
            mine, theirs = getattr(self, key), getattr(features, key)
            if mine is not None and theirs is not None and mine != theirs:
                return f"extractor {key} {theirs!r}, the run's is {mine!r}"
        mine, theirs = self.params or {}, features.params or {}
        for key in sorted(set(mine) & set(theirs) - set(self.file_options)):
            if mine[key] != theirs[key]:
                return f"extractor option {key}={theirs[key]!r}, the run's is {mine[key]!r}"
        if self.weights_sha1 is not None and features.weights_sha1 is not None:
            digests = sorted(self.weights_sha1.values()), sorted(features.weights_sha1.values())
            if digests[0] != digests[1]:
                return (f"network file SHA-1 {', '.join(digests[1]) or 'none'}, "
                        f"the run's is {', '.join(digests[0]) or 'none'}")
        return ""

    def without_files(self) -> ExtractorRecord:
        """This record with every option that names a file emptied: only the user names files."""
        if self.params is None:
            return self
        files = self.file_options
        return dataclasses.replace(self, params={k: ("" if k in files else v) for k, v in self.params.items()})

    def for_media(self, options: dict | None = None, where: str | Path | None = None) -> ExtractorRecord:
        """The record to extract new media with for a run trained on these features, plus the options
        the user gives (``--option``). A run never names a file to load: an extractor that runs the
        user's network needs that file given again, and it must be the file the run was trained with
        (same SHA-1); options that change the features must equal the recorded ones."""
        options = dict(options or {})
        files = self.file_options
        params = dict(self.params or {})
        for key, value in options.items():
            if key in files or key not in params or params[key] == value:
                continue
            raise AvmatchError(f"the run's features were extracted with {key}={params[key]!r}, not {value!r}; "
                               "features made otherwise would not fit its model", where)
        given = {k: str(v) for k, v in options.items() if k in files and v}
        wanted = sorted(set((self.weights_sha1 or {}).values()))
        if wanted or given:
            have = sorted({sha1_of(regular_file(p)) for p in given.values()})
            if have != wanted:
                hint = ", ".join(f"{k}=PATH" for k in files[:1]) or "the network"
                raise AvmatchError(("the run's features came from your own network (SHA-1 " + ", ".join(wanted)
                                    + f"); give that file again with --option {hint}" if not given else
                                    f"the network file(s) given (SHA-1 {', '.join(have)}) are not the one(s) the run "
                                    f"was trained with ({', '.join(wanted) or 'none'})"), where)
        return dataclasses.replace(self, params={**params, **options})


def regular_file(path: str | Path) -> str:
    """The absolute path of a regular file, or a one-line error: a folder, a named pipe (reading it
    would wait forever) or a device is never opened."""
    full = os.path.abspath(os.path.expanduser(str(path)))
    try:
        mode = os.stat(full).st_mode
    except OSError:
        raise AvmatchError("no such weights file", full) from None
    if stat.S_ISDIR(mode):
        raise AvmatchError("is a folder, not a TorchScript weights file", full)
    if not stat.S_ISREG(mode):
        raise AvmatchError("is not a regular file (a pipe or a device?); give a TorchScript weights file", full)
    return full


def sha1_of(path: str) -> str:
    """The first 16 hex digits of a file's SHA-1: what a corpus and a run record of a network file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()[:16]


def check_record(record: dict, fail: Callable[[str], None], max_items: int, max_value: float) -> None:
    """A checkpoint's extractor record only says how its features were made: a name, a version, plain
    option values (at most ``max_items``, numbers within ±``max_value``) and file digests; it can never
    name a file for avmatch to load. ``fail`` (which raises) gets the first fault."""
    from avmatch.features import _REGISTRY, extractor_options

    if not record:
        return
    name = record.get("name")
    if not isinstance(name, str) or len(name) > 64:
        fail(f"malformed checkpoint: its extractor's name is {name!r:.40}, not a short string")
    params = record.get("params", {})
    if not isinstance(params, dict) or len(params) > max_items:
        fail("malformed checkpoint: its extractor's params are not a small table")
    if name in _REGISTRY:
        unknown = sorted(set(params) - set(extractor_options(name)))
        if unknown:
            fail(f"malformed checkpoint: extractor {name!r} has no option {unknown[0]!r}")
    for key, value in params.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            if not abs(value) <= max_value:
                fail(f"malformed checkpoint: extractor option {key}={value!r:.40} is out of bounds")
        elif not isinstance(value, str) or len(value) > 4096:
            fail(f"malformed checkpoint: extractor option {key} is a {type(value).__name__}, not a plain value")
    digests = record.get("weights_sha1", {})
    if not isinstance(digests, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 64
                                                for k, v in digests.items()):
        fail("malformed checkpoint: its extractor's weights_sha1 is not a table of digests")
