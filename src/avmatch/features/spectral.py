"""Streamed log-mel spectrogram in numpy, shared by the extractors.

Rows come out while the audio streams in, so memory stays bounded whatever the file length. Row k
describes the interval [k * hop, (k + 1) * hop) samples: its window is centred on the middle of that
interval, so row k of audio lines up with video frame k when hop = sample_rate / fps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import scipy.fft

DB_FLOOR = -100.0  # dB given to digital silence


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters, evenly spaced on the mel scale, peak 1."""
    fmax = sample_rate / 2 if fmax is None else min(fmax, sample_rate / 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - bins) / np.maximum(hi - mid, 1e-9)
    fb = np.maximum(0.0, np.minimum(up, down))
    # A band narrower than one FFT bin would be empty: give it the nearest bin.
    for i in np.flatnonzero(fb.sum(axis=1) == 0):
        fb[i, np.argmin(np.abs(bins - mid[i, 0]))] = 1.0
    return fb.astype(np.float32)


class LogMel:
    """Streamed log-mel power in dB (a full-scale sine peaks near -6 dB)."""

    def __init__(self, sample_rate: int, hop: float, win: int, n_mels: int, fmin: float = 0.0,
                 fmax: float | None = None):
        self.hop, self.win = float(hop), int(win)
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.window = np.hanning(self.win + 2)[1:-1].astype(np.float32)
        self.scale = float(self.window.sum()) ** 2 / 4.0  # sine of amplitude 1 -> power 1 at its bin
        self.fb = mel_filterbank(sample_rate, self.n_fft, n_mels, fmin, fmax)
        self.pad_left = int(round(self.win / 2 - self.hop / 2))

    def rows(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(mel dB (n, n_mels), frame energy dB (n,)) for each run of finished rows; round(samples / hop)
        rows in all."""
        buf = np.zeros(self.pad_left, np.float32)
        buf_start = 0  # index of buf[0] in the padded signal
        k = 0  # next row
        n = 0  # samples seen
        for chunk in chunks:
            n += chunk.size
            buf = np.concatenate([buf, chunk.astype(np.float32, copy=False)])
            ready = int(np.floor((buf_start + buf.size - self.win - 0.5) / self.hop)) + 1
            if ready > k:
                yield self._rows(buf, buf_start, k, ready)
                k = ready
            keep_from = int(round(k * self.hop)) - buf_start
            if keep_from > 0:
                buf, buf_start = buf[keep_from:], buf_start + keep_from
        total = int(round(n / self.hop))
        if total > k:
            buf = np.concatenate([buf, np.zeros(self.win + int(np.ceil(self.hop)), np.float32)])
            yield self._rows(buf, buf_start, k, total)

    def _rows(self, buf: np.ndarray, buf_start: int, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        starts = np.round(np.arange(first, stop) * self.hop).astype(np.int64) - buf_start
        frames = buf[starts[:, None] + np.arange(self.win)]  # (n, win)
        energy = 10.0 * np.log10(np.mean(frames * frames, axis=1) * 2.0 + 1e-10)  # sine amplitude 1 -> 0 dB
        spec = scipy.fft.rfft(frames * self.window, n=self.n_fft, axis=1)  # complex64; numpy's is slower
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32) / self.scale  # (n, n_fft//2+1)
        mel = power @ self.fb.T  # (n, n_mels)
        return (np.maximum(10.0 * np.log10(mel + 1e-10), DB_FLOOR).astype(np.float32),
                np.maximum(energy, DB_FLOOR).astype(np.float32))


def mel_centres_hz(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Centre frequency of each band of :func:`mel_filterbank` (same spacing)."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))[1:-1]
