"""Spoken words on any machine: eSpeak NG from the ``espeakng-loader`` wheel, through ctypes.

The wheel bundles ``libespeak-ng`` and its ``espeak-ng-data``, so speech needs no system program.
Only when the package is missing does :func:`say` fall back to an ``espeak-ng`` program on the PATH.

    >>> audio = say("seven rockets", 16000, voice="en+f3", speed_wpm=170, pitch=60)  # float32, peak 1

eSpeak keeps state in static variables across utterances (pitch flutter phase, gain control), which
neither ``espeak_Terminate`` nor a second ``espeak_Initialize`` resets: the same text said twice in
one process differs by a few samples, and a corpus would depend on the order in which worker
processes happened to say things. So every utterance loads a private copy of the library afresh and
unloads it afterwards (about 1 ms), and seeds eSpeak's random numbers, which it would seed from the
clock: the same arguments give the same samples in any process, at any time.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

# Voices that the bundled data has (checked by the tests): English accents and variants of the
# speaker (m: male, f: female), and a few other languages.
VOICES: tuple[str, ...] = ("en", "en-us", "en-gb-scotland", "en+m3", "en+m5", "en+f3", "en+f4", "en-us+m2",
                           "en-us+f2", "de", "fr", "es", "it", "nl", "pt")

SPEED_WPM_RANGE = (80, 450)  # what eSpeak accepts
PITCH_RANGE = (0, 99)

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # the pause at the end of a sentence, as the espeak-ng program says it
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_EE_OK, _EE_NOT_FOUND = 0, 2

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()  # the library is not thread-safe, and the callback fills one list
# A fork while another thread is inside say() would copy a half-used library into the child:
# hold the lock across fork so that the child starts from a clean state.
os.register_at_fork(before=_lock.acquire, after_in_parent=_lock.release, after_in_child=_lock.release)

_chunks: list[np.ndarray] = []


def _collect(wav, n_samples: int, events) -> int:
    if n_samples > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
    return 0  # 0: go on synthesising


_callback = _SYNTH_CALLBACK(_collect)  # kept alive here: the library holds a bare pointer to it


class _Bundled:
    """The wheel's library and data, loaded afresh for each utterance from a private copy."""

    def __init__(self, library: str, data: str):
        self.data = os.fsencode(data)
        if hasattr(os, "memfd_create"):
            # A private copy in memory: dlopen of the wheel's own path could share (and reset) an
            # instance that another package loaded, and a file copy would outlive killed workers.
            fd = os.memfd_create("libespeak-ng-avmatch")
            with open(fd, "wb", closefd=False) as copy:
                copy.write(Path(library).read_bytes())
            self.library = f"/proc/self/fd/{fd}"  # forked children inherit the fd, and so the path
        else:
            self.library = library

    def say(self, text: str, voice: str, speed_wpm: int, pitch: int) -> tuple[np.ndarray, int] | None:
        lib = ctypes.CDLL(self.library, mode=os.RTLD_LOCAL)
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                         ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data, _INITIALIZE_DONT_EXIT)
            if rate <= 0:
                return None
            try:
                lib.espeak_SetSynthCallback(_callback)
                err = lib.espeak_SetVoiceByName(voice.encode())
                if err == _EE_NOT_FOUND:
                    raise ValueError(f"unknown eSpeak voice {voice!r}; these work: {', '.join(VOICES)}")
                for param, value in ((_RATE, speed_wpm), (_VOLUME, 100), (_PITCH, pitch), (_RANGE, 50), (_WORDGAP, 0)):
                    lib.espeak_SetParameter(param, value, 0)
                raw = text.encode() + b"\0"
                _chunks.clear()
                # eSpeak seeds its own random numbers (used by some voices) from the clock
                lib.espeak_ng_SetRandSeed(1)
                err = lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
                if err != _EE_OK or lib.espeak_Synchronize() != _EE_OK or not _chunks:
                    return None
                return np.concatenate(_chunks), int(rate)
            finally:
                _chunks.clear()
                lib.espeak_Terminate()
        finally:
            import _ctypes

            _ctypes.dlclose(lib._handle)  # the next utterance loads a fresh instance


_bundled: _Bundled | None = None
_bundled_checked = False


def _library() -> _Bundled | None:
    """The bundled library, set up on first use in this process (call with the lock held); None
    without the package."""
    global _bundled, _bundled_checked
    if not _bundled_checked:
        _bundled_checked = True
        try:
            import espeakng_loader

            library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
            if os.name == "posix" and Path(library).is_file():  # loaded and unloaded with dlopen/dlclose
                _bundled = _Bundled(library, data)
        except (ImportError, OSError, RuntimeError):
            _bundled = None
    return _bundled


def _say_with_program(text: str, voice: str, speed_wpm: int, pitch: int) -> tuple[np.ndarray, int] | None:
    """The system ``espeak-ng`` program's WAV output, or None without one or if it fails."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    from scipy.io import wavfile

    fd, tmp = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        subprocess.run([exe, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", tmp, text],
                       check=True, capture_output=True, timeout=20)
        rate, data = wavfile.read(tmp)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    finally:
        Path(tmp).unlink(missing_ok=True)
    x = data.astype(np.float32)
    if x.ndim > 1:
        x = x.mean(1)
    return x, int(rate)


def speech_available() -> bool:
    """Whether :func:`say` can speak here: the bundled library, else an ``espeak-ng`` program."""
    with _lock:
        bundled = _library()
    return bundled is not None or shutil.which("espeak-ng") is not None


def say(text: str, sample_rate: int, voice: str = "en", speed_wpm: int = 160, pitch: int = 50) -> np.ndarray | None:
    """``text`` spoken by eSpeak NG: float32 mono at ``sample_rate``, peak 1, with eSpeak's own
    silence before and after the words; None if nothing can speak here or nothing was said.

    ``voice`` is an eSpeak voice name (see :data:`VOICES`), ``speed_wpm`` in words per minute
    (80-450), ``pitch`` 0-99 (50 is the voice's normal pitch). The same arguments give the same samples.
    """
    if not (SPEED_WPM_RANGE[0] <= speed_wpm <= SPEED_WPM_RANGE[1]):
        raise ValueError(f"speed_wpm must be in {SPEED_WPM_RANGE[0]}..{SPEED_WPM_RANGE[1]}, got {speed_wpm}")
    if not (PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]):
        raise ValueError(f"pitch must be in {PITCH_RANGE[0]}..{PITCH_RANGE[1]}, got {pitch}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    with _lock:
        bundled = _library()
        said = bundled.say(text, voice, int(speed_wpm), int(pitch)) if bundled is not None else None
    if bundled is None:
        said = _say_with_program(text, voice, int(speed_wpm), int(pitch))
    if said is None:
        return None
    samples, rate = said
    from scipy.signal import resample_poly

    g = np.gcd(rate, sample_rate)
    x = resample_poly(samples.astype(np.float32), sample_rate // g, rate // g).astype(np.float32)
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return x / peak if peak > 0 else None
