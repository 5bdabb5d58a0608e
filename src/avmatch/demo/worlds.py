"""A second scene generator, designed apart from :mod:`avmatch.demo.scenes`, for leave-family-out tests.

Same interface as ``scenes`` (``FAMILIES``, :func:`available_families`, :func:`make_scene`,
:func:`make_corpus`, the :class:`~avmatch.demo.scenes.Scene` it returns) but other objects, drawing,
motion and sound synthesis, so a model trained on one generator's families can be tested on
families it never saw:

  drums     2-3 pads struck by sticks at random times; a membrane model (Bessel-mode partials,
            a pitch glide, a stick click) whose pitch falls with the pad's size; the stick's lift
            shows how hard it will strike
  pendulum  a weight swings with a random push each half-swing; when it reaches one of the two
            bells it strikes it: an FM bell pitched by the bell's size; the bell glows and shakes
  drops     drops fall from taps into a pool and plop with a rising bubble chirp (Minnaert
            resonance) pitched by the drop's size; ripples spread where they land
  keys      a row of keys pressed singly or in chords; each key a Karplus-Strong plucked note, the
            keys' order setting the pitch; a pressed key sinks and lights up
  blocks    blocks drop onto the floor: a wooden-bar modal thud pitched by the block's size, then a
            small rebound that rattles when it lands again
  mouth     cartoon lips, close up, opening with the loudness of speech from
            :func:`avmatch.speech.say` when it can speak, else formant-synthesised babble; bigger
            lips, lower voice
  events    randomised cause and effect (for training): objects of random shape and voice flash,
            jump, swell, change colour, drop, shake or appear at random times and sound then,
            beside silent ones doing the same: only the timing ties picture and sound

Rendering is vectorised over all frames: a camera (slow zoom, drift and per-frame shake) maps every
pixel to world coordinates, in which the background and every shape are evaluated as signed
distances with anti-aliased edges. Each clip also draws, at random: a background (gradient,
stripes or checker, with texture), silent distractors of other shapes moving on smooth paths,
silent blinking lights, lighting ramps and flicker, sensor grain, sounds with no on-screen cause,
background noise of a random spectral slope (at times with crackle or a rumble), per-source levels
and a whole-track level within ±12 dB. Deterministic per seed (given whether speech is available).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

from avmatch.demo import recordings
from avmatch.demo.scenes import FPS, SAMPLE_RATE, Scene, add_sound, write_corpus

GENERATOR = "worlds"

# ------------------------------------------------------------------------------------------- camera


class _Canvas:
    """All frames at once, seen through a camera: world x spans [0, 1] over the width at zoom 1,
    world y spans [0, height / width]; pixel (i, j) of frame n sees (X[n, 0, j], Y[n, i, 0])."""

    def __init__(self, planes: np.ndarray, ax: np.ndarray, bx: np.ndarray, by: np.ndarray):
        # colour planes first: numpy is slow at broadcasting over a last axis of 3
        self.planes = planes  # (3, N, H, W)
        _, n, h, w = planes.shape
        self.ax, self.bx, self.by = (v.astype(np.float32) for v in (ax, bx, by))  # (N,): world = b + a * (pixel + 0.5)
        self.X = (bx[:, None] + ax[:, None] * (np.arange(w) + 0.5)).astype(np.float32)[:, None, :]  # (N, 1, W)
        self.Y = (by[:, None] + ax[:, None] * (np.arange(h) + 0.5)).astype(np.float32)[:, :, None]  # (N, H, 1)
        self.aspect = h / w

    @property
    def n(self) -> int:
        return self.planes.shape[1]

    def frames(self) -> np.ndarray:
        """(N, H, W, 3) float32, as a Scene holds them."""
        return np.ascontiguousarray(self.planes.transpose(1, 2, 3, 0))

    def _span(self, k: np.ndarray, lo: np.ndarray, hi: np.ndarray, b: np.ndarray, size: int) -> slice:
        """Pixel indices that world [lo, hi] covers in any of frames ``k``."""
        a = self.ax[k]
        i0 = int(np.floor(np.min((lo - b[k]) / a))) - 1
        i1 = int(np.ceil(np.max((hi - b[k]) / a))) + 1
        return slice(max(0, i0), min(size, max(0, i1)))

    def shape(self, sdf: Callable[..., np.ndarray], cx, cy, reach, colour, alpha=1.0, **params) -> None:
        """Paint a shape: ``sdf(dx, dy, **params)`` is its signed distance (world units) at offsets from
        its centre (cx, cy); ``reach`` bounds it. Any argument may be a per-frame (N,) array; frames with
        alpha 0 are skipped."""
        n = self.n
        alpha = np.broadcast_to(np.asarray(alpha, np.float32), (n,))
        shown = np.flatnonzero(alpha > 0)
        cx, cy, reach = (np.broadcast_to(np.asarray(v, np.float32), (n,)) for v in (cx, cy, reach))
        colour = np.asarray(colour, np.float32)
        params = {key: np.asarray(v, np.float32) for key, v in params.items()}
        # a moving shape a few frames at a time, so each is drawn in a small box around where it is then
        moving = len(shown) and max(np.ptp(cx[shown]), np.ptp(cy[shown])) > float(reach[shown].max())
        breaks = np.diff(shown) != 1
        if moving:
            breaks |= np.diff(shown // _CHUNK) != 0
        for k in np.split(shown, np.flatnonzero(breaks) + 1):
            if len(k):
                self._paint(sdf, k, cx[k], cy[k], reach[k], colour, alpha[k], params)

    def _paint(self, sdf, k, cx, cy, reach, colour, alpha, params) -> None:
        _, n, h, w = self.planes.shape
        rows = self._span(k, cy - reach, cy + reach, self.by, h)
        cols = self._span(k, cx - reach, cx + reach, self.bx, w)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return
        part = slice(k[0], k[-1] + 1)  # k is a run of consecutive frames
        dx = self.X[part, :, cols] - cx[:, None, None]  # (n, 1, w')
        dy = self.Y[part, rows, :] - cy[:, None, None]  # (n, h', 1)
        p = {key: (v[k][:, None, None] if v.ndim == 1 and len(v) == n else v) for key, v in params.items()}
        d = sdf(dx, dy, **p)
        cover = 0.5 - d / self.ax[part, None, None]  # anti-aliased edge: coverage of the pixel
        np.clip(cover, 0.0, 1.0, out=cover)
        cover *= alpha[:, None, None]
        for c in range(3):
            col = colour[k, c][:, None, None] if colour.ndim == 2 else colour[c]
            view = self.planes[c, part, rows, cols]
            view += cover * (col - view)


_CHUNK = 8  # frames drawn together


# Signed distances (negative inside), in world units, at offsets dx (n, 1, w) and dy (n, h, 1).

def sd_ellipse(dx, dy, rx, ry):
    return (np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) - 1.0) * np.minimum(rx, ry)


def sd_box(dx, dy, rx, ry, round_=0.0):
    qx, qy = np.abs(dx) - rx + round_, np.abs(dy) - ry + round_
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0) - round_


def sd_ring(dx, dy, r, thick):
    return np.abs(np.sqrt(dx * dx + dy * dy) - r) - thick / 2


def sd_diamond(dx, dy, r):
    return (np.abs(dx) + np.abs(dy) - r) * 0.7071


def sd_triangle(dx, dy, r):
    return np.maximum(np.abs(dx) * 0.866 + dy * 0.5, -dy) - r * 0.5


def sd_bell(dx, dy, r):
    return sd_triangle(dx, -dy, r)


def sd_cross(dx, dy, r, arm):
    return np.minimum(sd_box(dx, dy, r, arm), sd_box(dx, dy, arm, r))


def sd_segment(dx, dy, hx, hy, r):
    """A capsule from (-hx, -hy) to (hx, hy) of radius r."""
    px, py = dx + hx, dy + hy
    bx, by = 2 * hx, 2 * hy
    h = np.clip((px * bx + py * by) / (bx * bx + by * by + 1e-12), 0.0, 1.0)
    return np.sqrt((px - bx * h) ** 2 + (py - by * h) ** 2) - r


def _camera(rng: np.random.Generator, n: int, w: int, h: int, fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, bx, by) per frame: a slow zoom in or out, a slow drift and a small shake of the view."""
    t = np.arange(n) / fps
    z0, z1 = rng.uniform(1.0, 1.12, 2)
    zoom = z0 + (z1 - z0) * t / max(t[-1], 1e-6)
    shake_px = rng.uniform(0.0, 0.9) if rng.random() < 0.8 else 0.0
    smooth = rng.uniform(0.0, 0.8)  # 0: independent jitter; towards 1: a hand-held sway
    jitter = lfilter([1 - smooth], [1, -smooth], rng.standard_normal((2, n)), axis=1) / np.sqrt((1 - smooth) / (1 + smooth))
    a = 1.0 / (w * zoom)
    cx = 0.5 + rng.uniform(-0.02, 0.02) * t / max(t[-1], 1e-6) + jitter[0] * shake_px / w
    cy = 0.5 * h / w + rng.uniform(-0.02, 0.02) * t / max(t[-1], 1e-6) + jitter[1] * shake_px / w
    return a, cx - 0.5 * w * a, cy - 0.5 * h * a


# ------------------------------------------------------------------------------------------- looks

def _colour(rng: np.random.Generator, sat=(0.5, 1.0), val=(0.7, 1.0)) -> np.ndarray:
    """A random colour, via a random mix of primaries rather than a hue wheel."""
    c = rng.dirichlet(np.full(3, 0.6))
    c = c / c.max()
    s, v = rng.uniform(*sat), rng.uniform(*val)
    return (v * (1 - s + s * c)).astype(np.float32)


def _background(cv: _Canvas, rng: np.random.Generator) -> None:
    """A world-fixed pattern (gradient, stripes or checker) with texture, seen through the camera."""
    X, Y = cv.X, cv.Y
    c0, c1 = _colour(rng, (0.1, 0.6), (0.1, 0.5)), _colour(rng, (0.1, 0.6), (0.1, 0.5))
    kind = rng.integers(3)
    # every pattern as sums and products of a function of X and one of Y: the camera keeps them apart
    if kind == 0:
        theta = rng.uniform(0, 2 * np.pi)
        mix = np.clip((0.5 + (X - 0.5) * np.cos(theta)) + (Y - 0.5) * np.sin(theta), 0, 1)
    elif kind == 1:
        theta, f = rng.uniform(0, np.pi), rng.uniform(3, 9)
        ax, ay = 2 * np.pi * f * np.cos(theta) * X, 2 * np.pi * f * np.sin(theta) * Y
        depth = rng.uniform(0.15, 0.5)
        mix = depth * np.sin(ax) * np.cos(ay) + depth * np.cos(ax) * np.sin(ay) + depth  # sin(ax + ay), stripes
    else:
        f = rng.uniform(3, 8)
        mix = (np.sign(np.sin(2 * np.pi * f * X)) * np.sign(np.sin(2 * np.pi * f * Y))) * rng.uniform(0.1, 0.35) + 0.5
    # texture: a world-fixed grain image, sampled where each pixel looks
    tex = rng.normal(0, rng.uniform(0.01, 0.05), (96, 96)).astype(np.float32)
    iy = np.clip(((Y + 0.25) * 64).astype(np.intp), 0, 95)
    ix = np.clip(((X + 0.25) * 64).astype(np.intp), 0, 95)
    grain = tex.ravel().take(iy * 96 + ix)
    for c in range(3):
        np.multiply(mix, c1[c] - c0[c], out=cv.planes[c])
        cv.planes[c] += grain
        cv.planes[c] += c0[c]


def _lighting(planes: np.ndarray, rng: np.random.Generator, fps: float) -> None:
    """Brightness and contrast ramps, at times flicker, then sensor grain: the whole picture, no sound."""
    _, n, h, w = planes.shape
    t = np.arange(n) / fps
    u = t / max(t[-1], 1e-6)
    gain = np.exp(rng.uniform(-0.35, 0.35) + rng.uniform(-0.4, 0.4) * u)
    contrast = rng.uniform(0.7, 1.2) + rng.uniform(-0.2, 0.2) * u
    if rng.random() < 0.35:
        gain = gain * (1 + rng.uniform(0.03, 0.12) * np.sin(2 * np.pi * rng.uniform(0.5, 9) * t + rng.uniform(0, 6)))
    # grain: windows of one noise tile at random places, far cheaper than fresh noise per pixel
    tile = (rng.random((2 * h, 2 * w), dtype=np.float32) - 0.5) * np.float32(rng.uniform(0.5, 4.0) / 255 * 3.46)
    offsets = rng.integers(0, h, (n, 2))
    grain = np.stack([tile[oy : oy + h, ox : ox + w] for oy, ox in offsets])
    scale = (contrast * gain).astype(np.float32)[:, None, None]
    shift = (0.5 * gain * (1 - contrast)).astype(np.float32)[:, None, None]
    for plane in planes:
        plane *= scale
        plane += shift
        plane += grain
    np.clip(planes, 0.0, 1.0, out=planes)


# ------------------------------------------------------------------------------------------- sounds

MEMBRANE_MODES = np.array([1.0, 1.594, 2.136, 2.296, 2.653, 2.918, 3.156, 3.501])  # Bessel zeros / j01
BAR_MODES = np.array([1.0, 2.756, 5.404, 8.933])  # a free-free bar


def _modal(sr: int, freqs: np.ndarray, amps: np.ndarray, decays_s: np.ndarray, dur_s: float,
           glide: float = 0.0, glide_s: float = 0.02) -> np.ndarray:
    """A bank of exponentially decaying partials; ``glide`` bends every partial down from (1 + glide)x."""
    n = int(dur_s * sr)
    t = np.arange(n, dtype=np.float32) / np.float32(sr)
    bend = 1.0 + glide * np.exp(-t / np.float32(glide_s))
    phase = (2 * np.pi / sr) * np.cumsum(bend, dtype=np.float64).astype(np.float32)  # (n,)
    out = np.zeros(n, np.float32)
    for f, a, d in zip(freqs, amps, decays_s, strict=True):
        m = min(n, int(6 * d * sr))  # each partial only while it is audible
        out[:m] += np.float32(a) * np.exp(t[:m] * np.float32(-1 / d)) * np.sin(np.float32(f) * phase[:m])
    return out / (np.abs(out).max() + 1e-9)


def membrane(sr: int, f0: float, rng: np.random.Generator, decay_s: float = 0.25) -> np.ndarray:
    """A struck drum head: Bessel-mode partials with a falling pitch, plus a stick click."""
    k = len(MEMBRANE_MODES)
    amps = rng.uniform(0.3, 1.0, k) / (1 + np.arange(k)) ** rng.uniform(0.3, 1.0)
    decays = decay_s / (1 + 0.7 * np.arange(k))
    out = _modal(sr, f0 * MEMBRANE_MODES, amps, decays, decay_s * 4, glide=rng.uniform(0.05, 0.25))
    m = int(0.004 * sr)
    click = sosfilt(butter(2, [1500, 6000], "bandpass", fs=sr, output="sos"), rng.standard_normal(m)) * np.linspace(1, 0, m)
    out[:m] += rng.uniform(0.3, 0.8) * click / (np.abs(click).max() + 1e-9)
    return out.astype(np.float32)


def fm_bell(sr: int, fc: float, rng: np.random.Generator, decay_s: float = 0.8) -> np.ndarray:
    """A bell by FM: an inharmonic modulator whose index decays faster than the tone."""
    t = np.arange(int(decay_s * 3 * sr)) / sr
    ratio = rng.choice([1.4, 2.76, 3.5]) * rng.uniform(0.98, 1.02)
    index = rng.uniform(2.0, 5.0) * np.exp(-t / (decay_s * 0.4))
    out = np.exp(-t / decay_s) * np.sin(2 * np.pi * fc * t + index * np.sin(2 * np.pi * fc * ratio * t))
    out *= np.clip(t / 0.001, 0, 1)
    return out.astype(np.float32)


def bubble(sr: int, f0: float, rng: np.random.Generator, decay_s: float = 0.04) -> np.ndarray:
    """A drop's plop: a sine whose pitch rises as the bubble rises (Minnaert resonance), decaying fast."""
    t = np.arange(int(decay_s * 7 * sr)) / sr
    rise = rng.uniform(1.5, 4.0) / (decay_s * 7)  # pitch up by 1.5..4x over the sound
    phase = 2 * np.pi * f0 * (t + 0.5 * rise * t * t)
    out = np.exp(-t / decay_s) * np.sin(phase) * np.clip(t / 0.0015, 0, 1)
    m = int(0.003 * sr)
    out[:m] += 0.3 * rng.standard_normal(m) * np.linspace(1, 0, m)  # the splash
    return out.astype(np.float32)


def pluck(sr: int, f0: float, rng: np.random.Generator, dur_s: float = 0.8, brightness: float = 0.5) -> np.ndarray:
    """A plucked string by Karplus-Strong: a noise burst circulating in a damped delay line."""
    period = max(2, int(round(sr / f0)))
    n = int(dur_s * sr)
    burst = rng.uniform(-1, 1, period)
    burst = lfilter([brightness], [1, -(1 - brightness)], burst)  # a darker pluck for a softer hit
    x = np.zeros(n)
    x[:period] = burst
    loss = 0.5 * (0.996 - 0.004 * rng.random())
    a = np.zeros(period + 2)
    a[0], a[period], a[period + 1] = 1.0, -loss, -loss
    out = lfilter([1.0], a, x)
    out *= np.clip((n - np.arange(n)) / (0.03 * sr), 0, 1)
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def wood_thud(sr: int, f0: float, rng: np.random.Generator, decay_s: float = 0.06) -> np.ndarray:
    """A block landing: free-bar partials plus a low thump of filtered noise."""
    amps = np.array([1.0, 0.5, 0.25, 0.12]) * rng.uniform(0.6, 1.0, 4)
    out = _modal(sr, f0 * BAR_MODES, amps, decay_s / (1 + np.arange(4)), decay_s * 5)
    m = int(0.05 * sr)
    thump = sosfilt(butter(2, min(400, 3 * f0), fs=sr, output="sos"), rng.standard_normal(m)) * np.exp(-np.arange(m) / (0.012 * sr))
    out[:m] += 1.5 * thump / (np.abs(thump).max() + 1e-9)
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def whoosh(sr: int, rng: np.random.Generator, dur_s: float) -> np.ndarray:
    """Band-passed noise swelling and fading: wind or a car passing off screen."""
    n = int(dur_s * sr)
    lo = rng.uniform(200, 1500)
    x = sosfilt(butter(2, [lo, lo * rng.uniform(1.5, 3)], "bandpass", fs=sr, output="sos"), rng.standard_normal(n))
    x *= np.sin(np.pi * np.arange(n) / n) ** 2
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def _slope_noise(n: int, rng: np.random.Generator, slope: float) -> np.ndarray:
    """Unit-RMS noise whose power falls as 1 / f**slope (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    x = np.fft.irfft(spec * f ** (-slope / 2), n)
    return x / (x.std() + 1e-9)


def ambience(n: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Unit-RMS background: noise of a random spectral slope, at times crackle or a room rumble."""
    x = _slope_noise(n, rng, rng.uniform(0.0, 2.0))
    if rng.random() < 0.3:  # crackle: sparse clicks of random size
        clicks = (rng.random(n) < rng.uniform(5, 40) / sr) * rng.standard_normal(n) * 6
        x = x + lfilter([1.0], [1.0, -0.6], clicks)
    if rng.random() < 0.3:  # a room's rumble: a slowly beating low tone
        t = np.arange(n) / sr
        f = rng.uniform(35, 120)
        x = x + rng.uniform(0.5, 2.0) * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 1) * t))
    return (x / (x.std() + 1e-9)).astype(np.float32)


def _event_times(rng: np.random.Generator, end_s: float, rate_hz: float, min_gap_s: float, start_s: float = 0.0) -> np.ndarray:
    """Irregular times in [start_s, end_s): gaps of min_gap_s plus gamma-distributed (shape 2) waits."""
    mean_wait = max(1.0 / rate_hz - min_gap_s, 0.02)
    gaps = min_gap_s + rng.gamma(2.0, mean_wait / 2, int(end_s * rate_hz * 3) + 4)
    t = start_s + rng.uniform(0, 1.0 / rate_hz) + np.concatenate([[0.0], np.cumsum(gaps)])
    return t[t < end_s]


def _level(rng: np.random.Generator, spread_db: float = 6.0) -> float:
    return float(10 ** (rng.uniform(-spread_db, spread_db) / 20))


# ----------------------------------------------------------------------------------------- families

FamilyFn = Callable[[Scene, _Canvas, np.random.Generator], None]
FAMILIES: dict[str, FamilyFn] = {}


def _family(name: str) -> Callable[[FamilyFn], FamilyFn]:
    def register(fn: FamilyFn) -> FamilyFn:
        FAMILIES[name] = fn
        return fn
    return register


def _unit(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def _since(times: np.ndarray, events: np.ndarray) -> np.ndarray:
    """(N,) seconds since the latest event at or before each time (inf before the first)."""
    if not len(events):
        return np.full(len(times), np.inf)
    i = np.searchsorted(events, times, side="right") - 1
    return np.where(i >= 0, times - events[np.maximum(i, 0)], np.inf)


def _until(times: np.ndarray, events: np.ndarray) -> np.ndarray:
    """(N,) seconds until the next event after each time (inf after the last)."""
    if not len(events):
        return np.full(len(times), np.inf)
    i = np.searchsorted(events, times, side="right")
    return np.where(i < len(events), events[np.minimum(i, len(events) - 1)] - times, np.inf)


@_family("drums")
def _drums(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """Pads struck by sticks; a bigger pad sounds lower; a higher lift means a harder stroke."""
    sr, times, aspect = scene.sample_rate, scene.frame_times(), cv.aspect
    n_pads = int(rng.integers(2, 4))
    slots = (np.arange(n_pads) + 0.5) / n_pads + rng.uniform(-0.04, 0.04, n_pads)
    for p in range(n_pads):
        r = rng.uniform(0.07, min(0.16, 0.45 / n_pads))
        size = _unit(r, 0.07, 0.16)
        f0 = 80.0 * 2 ** (2.3 * (1 - size) + rng.uniform(-0.1, 0.1))  # 80..400 Hz
        cx, cy = slots[p], aspect * rng.uniform(0.6, 0.8)
        colour, rim = _colour(rng), _colour(rng, val=(0.3, 0.6))
        hits = _event_times(rng, scene.duration_s - 0.05, rng.uniform(0.5, 1.6) / max(1, n_pads - 1), 0.3, 0.05)
        force = rng.uniform(0.4, 1.0, len(hits))
        for t0, f in zip(hits, force, strict=True):
            add_sound(scene.audio, sr, t0, membrane(sr, f0, rng, 0.08 + 0.15 * size), f * _level(rng, 3))
        scene.events_s.extend(hits.tolist())
        since, until = _since(times, hits), _until(times, hits)
        nxt = np.searchsorted(hits, times, side="right")
        lift_max = (0.05 + 0.15 * np.append(force, 0.5)[np.minimum(nxt, len(hits))]) * aspect
        lift = lift_max * np.minimum(1.0, np.minimum(until / 0.12, since / 0.2))  # down fast, back up slower
        ring = np.exp(-since / 0.1)  # the head flashes and dents when struck
        cv.shape(sd_ellipse, cx, cy + 0.3 * r, r * 1.1, rim, rx=r * 1.1, ry=0.35 * r)
        head = colour[None, :] * (0.6 + 0.4 * ring[:, None]) + 0.4 * ring[:, None]
        cv.shape(sd_ellipse, cx, cy, r * 1.05, head, rx=r, ry=0.3 * r * (1 - 0.3 * ring))
        tip_y = cy - 0.3 * r - lift
        side = rng.choice([-1, 1])
        hx, hy = side * 0.06, -0.12  # the stick leans out and up from its tip
        cv.shape(sd_segment, cx + hx + 0.1 * r * side, tip_y + hy, 0.2, (0.85, 0.75, 0.55), hx=hx, hy=hy, r=0.012)


@_family("pendulum")
def _pendulum(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """A pushed pendulum strikes a bell when its swing reaches it; a smaller bell rings higher."""
    sr, times, aspect = scene.sample_rate, scene.frame_times(), cv.aspect
    px, py = rng.uniform(0.4, 0.6), aspect * rng.uniform(0.08, 0.15)
    length = aspect * rng.uniform(0.5, 0.7)
    half_s = 0.42 * np.sqrt(length / 0.6)  # longer rod, slower swing
    bell_angle = rng.uniform(0.45, 0.7)
    bells = []
    for side in (-1, 1):
        r = rng.uniform(0.04, 0.09)
        fc = 400.0 * 2 ** (2.0 * (1 - _unit(r, 0.04, 0.09)) + rng.uniform(-0.1, 0.1))  # 400..1600 Hz
        bx = px + side * (length + r * 0.9) * np.sin(bell_angle)
        by = py + (length + r * 0.9) * np.cos(bell_angle)
        bells.append((r, fc, bx, by, _colour(rng, (0.2, 0.6), (0.7, 1.0)), []))
    # half-swings from one side to the other, each reaching a random amplitude; full ones hit the bell
    edges, angles, t, side = [], [], -rng.uniform(0, half_s), int(rng.choice([-1, 1]))
    a = rng.uniform(0.2, bell_angle)
    while t < scene.duration_s + half_s:
        edges.append(t)
        angles.append(side * a)
        side = -side
        strikes = rng.random() < 0.6
        a = bell_angle if strikes else rng.uniform(0.15, bell_angle * 0.85)
        t += half_s * rng.uniform(0.8, 1.25) * (0.85 + 0.15 * a / bell_angle)
        if strikes and 0.0 <= t < scene.duration_s - 0.02:
            bells[(side + 1) // 2][5].append(t)
    edges, angles = np.array(edges), np.array(angles)
    k = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, len(edges) - 2)
    u = (1 - np.cos(np.pi * (times - edges[k]) / (edges[k + 1] - edges[k]))) / 2
    theta = angles[k] * (1 - u) + angles[k + 1] * u
    bob_r = rng.uniform(0.035, 0.06)
    bx, by = px + length * np.sin(theta), py + length * np.cos(theta)
    for r, fc, cx, cy, colour, hits in bells:
        hits = np.array(hits)
        for t0 in hits:
            add_sound(scene.audio, sr, t0, fm_bell(sr, fc, rng, rng.uniform(0.3, 0.8)), _level(rng, 4))
        scene.events_s.extend(hits.tolist())
        glow = np.exp(-_since(times, hits) / 0.15)
        wobble = 0.012 * glow * np.sin(times * 60)
        lit = colour[None, :] * (0.55 + 0.45 * glow[:, None]) + 0.35 * glow[:, None]
        cv.shape(sd_bell, cx + wobble, cy, r * 1.3, lit, r=r * 1.6)
        halo = np.minimum(_since(times, hits), 1.0)  # a ring of light spreads from a struck bell
        cv.shape(sd_ring, cx, cy, r * 4, colour * 0.5 + 0.5, alpha=np.clip(1 - halo / 0.2, 0, 1),
                 r=r * (1.2 + 12 * halo), thick=0.03)
        cv.shape(sd_ellipse, cx + wobble, cy + 0.5 * r, r * 0.4, (0.2, 0.2, 0.2), rx=r * 0.3, ry=r * 0.3)
    rod = _colour(rng, (0.0, 0.3), (0.5, 0.8))
    cv.shape(sd_segment, (px + bx) / 2, (py + by) / 2, length, rod, hx=(bx - px) / 2, hy=(by - py) / 2, r=0.008)
    cv.shape(sd_ellipse, bx, by, bob_r * 1.1, _colour(rng), rx=bob_r, ry=bob_r)
    cv.shape(sd_box, px, py - 0.02, 0.1, rod * 0.6, rx=0.08, ry=0.012)


@_family("drops")
def _drops(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """Drops fall into a pool and plop; a bigger drop plops lower; ripples spread where it lands."""
    sr, times, aspect = scene.sample_rate, scene.frame_times(), cv.aspect
    surface = aspect * rng.uniform(0.68, 0.8)
    water = _colour(rng, (0.4, 0.9), (0.35, 0.7))
    cv.shape(sd_box, 0.5, surface + aspect, aspect, water, rx=1.0, ry=aspect)
    fall_s = rng.uniform(0.25, 0.45)
    g = 2 * (surface - 0.08) / fall_s ** 2
    for _ in range(int(rng.integers(1, 4))):
        x = rng.uniform(0.12, 0.88)
        cv.shape(sd_box, x, 0.03, 0.06, (0.55, 0.55, 0.6), rx=0.035, ry=0.03)  # the tap
        lands = _event_times(rng, scene.duration_s - 0.02, rng.uniform(0.5, 1.5), 0.3, 0.03)
        for t0 in lands:
            r = rng.uniform(0.012, 0.035)
            f0 = 500.0 * 2 ** (2.0 * (1 - _unit(r, 0.012, 0.035)) + rng.uniform(-0.15, 0.15))  # 500..2000 Hz
            add_sound(scene.audio, sr, t0, bubble(sr, f0, rng, rng.uniform(0.02, 0.06)), _level(rng, 4))
            age = times - t0
            falling = (age >= -fall_s) & (age < 0)
            y = np.clip(surface - 0.5 * g * age ** 2, 0.06, surface)
            cv.shape(sd_ellipse, x, y, 0.05, water * 0.5 + 0.5, alpha=falling.astype(np.float32), rx=r, ry=r * 1.4)
            spread = np.where(age >= 0, 0.02 + 0.35 * np.sqrt(np.maximum(age, 0)) * (r / 0.03), 0.0)
            fade = np.where((age >= 0) & (age < 1.0), np.exp(-np.maximum(age, 0) / 0.35), 0.0)
            cv.shape(sd_ring, x, surface + 0.01, spread + 0.02, water * 0.4 + 0.6, alpha=fade.astype(np.float32),
                     r=spread, thick=0.012)
            splash = np.clip(1 - np.where(age >= 0, age, 1.0) / 0.2, 0, 1).astype(np.float32)
            cv.shape(sd_ellipse, x, surface - 0.01, 0.12, (0.9, 0.95, 1.0), alpha=splash,
                     rx=r * 2 + 0.3 * np.maximum(age, 0), ry=r * 1.5 + 0.1 * np.maximum(age, 0))
        scene.events_s.extend(lands.tolist())


@_family("keys")
def _keys(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """A row of keys pressed singly or in chords; each key plucks a note, pitch rising left to right."""
    sr, times, aspect = scene.sample_rate, scene.frame_times(), cv.aspect
    n_keys = int(rng.integers(4, 9))
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16, 19, 21])  # pentatonic steps
    root = 130.0 * 2 ** rng.uniform(0, 1.5)
    width = 0.9 / n_keys
    y0 = aspect * rng.uniform(0.45, 0.65)
    ry = aspect * rng.uniform(0.12, 0.22)
    hue = _colour(rng)
    presses = _event_times(rng, scene.duration_s - 0.05, rng.uniform(1.0, 3.0), 0.2, 0.03)
    held: list[list[tuple[float, float]]] = [[] for _ in range(n_keys)]
    for t0 in presses:
        chord = rng.choice(n_keys, size=1 if rng.random() < 0.65 else int(rng.integers(2, 4)), replace=False)
        hold = rng.uniform(0.12, 0.4)
        for key in chord:
            f0 = root * 2 ** (scale[key] / 12)
            add_sound(scene.audio, sr, t0, pluck(sr, f0, rng, hold + 0.5, rng.uniform(0.3, 0.8)), _level(rng, 3) / len(chord) ** 0.5)
            held[key].append((t0, t0 + hold))
    scene.events_s.extend(presses.tolist())
    for key in range(n_keys):
        down = np.zeros(len(times), np.float32)
        for a, b in held[key]:
            down = np.maximum(down, ((times >= a - 0.5 / scene.fps) & (times < b)).astype(np.float32))
        cx = 0.05 + width * (key + 0.5)
        colour = hue[None, :] * (0.45 + 0.55 * down[:, None]) + 0.3 * down[:, None]
        cv.shape(sd_box, cx, y0 + 0.03 * down, max(width, ry) + 0.02, colour, rx=width * 0.42, ry=ry, round_=0.01)


@_family("blocks")
def _blocks(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """Blocks drop to the floor: a thud pitched by the block's size, a small rebound and a rattle."""
    sr, times, aspect = scene.sample_rate, scene.frame_times(), cv.aspect
    floor = aspect * rng.uniform(0.8, 0.92)
    cv.shape(sd_box, 0.5, floor + aspect, aspect, _colour(rng, (0.1, 0.4), (0.2, 0.5)), rx=1.0, ry=aspect)
    lands = _event_times(rng, scene.duration_s - 0.05, rng.uniform(0.8, 2.2), 0.3, 0.02)
    for t0 in lands:
        rx, ry = rng.uniform(0.04, 0.11), rng.uniform(0.03, 0.09)
        size = _unit(rx * ry, 0.0012, 0.0099)
        f0 = 150.0 * 2 ** (2.5 * (1 - size) + rng.uniform(-0.1, 0.1))  # 150..850 Hz
        fall_s = rng.uniform(0.2, 0.4)
        rest_y = floor - ry
        g = 2 * (rest_y + ry) / fall_s ** 2
        x = rng.uniform(0.1, 0.9)
        hop_s = rng.uniform(0.08, 0.16)  # the rebound's flight
        loud = _level(rng, 4)
        add_sound(scene.audio, sr, t0, wood_thud(sr, f0, rng), loud)
        if t0 + hop_s < scene.duration_s:
            add_sound(scene.audio, sr, t0 + hop_s, wood_thud(sr, f0 * 1.03, rng, 0.03), loud * 0.3)
        age = times - t0
        y = np.where(age < 0, rest_y - 0.5 * g * age ** 2,
                     rest_y - np.where(age < hop_s, 0.5 * 9.8 * hop_s * age - 0.5 * 9.8 * age ** 2, 0.0) * 2)
        squash = np.where((age >= 0) & (age < 0.06), 0.25, 0.0)
        gone = rng.uniform(0.8, 2.5)
        alpha = ((age >= -fall_s) & (age < gone)).astype(np.float32) * np.clip((gone - age) / 0.3, 0, 1).astype(np.float32)
        colour = _colour(rng)
        cv.shape(sd_box, x, y + ry * squash, max(rx, ry) * 1.3, colour, alpha=alpha, rx=rx * (1 + squash), ry=ry * (1 - squash))
        dust = np.where((age >= 0) & (age < 0.25), 1 - age / 0.25, 0.0).astype(np.float32)
        for s in (-1, 1):
            cv.shape(sd_ellipse, x + s * (rx + 0.2 * np.maximum(age, 0)), floor - 0.02, 0.1, (0.85, 0.82, 0.75),
                     alpha=dust, rx=0.03 + 0.2 * np.maximum(age, 0), ry=0.025)
        scene.events_s.append(float(t0))


# formants F1, F2, F3 (Hz) and how round the lips are (0 spread .. 1 round)
_VOWELS = np.array([[730, 1090, 2440, 0.2], [530, 1840, 2480, 0.1], [270, 2290, 3010, 0.0],
                    [570, 840, 2410, 0.9], [300, 870, 2240, 1.0], [640, 1190, 2390, 0.4]])
_WORDS = ("cat", "open", "door", "seven", "blue", "boats", "where", "today", "quick", "brown", "look",
          "home", "night", "salt", "raining", "never", "apple", "chair", "green", "water", "river", "lamp",
          "sugar", "pocket", "yellow", "kettle", "moon", "garden", "ladder", "violin")


def _formant_babble(sr: int, rng: np.random.Generator, f0: float, n_syllables: int) -> tuple[np.ndarray, np.ndarray]:
    """A made-up word: consonant-vowel syllables from a glottal sawtooth through three formant
    resonators. Returns (audio, roundness per sample)."""
    parts, rounds = [], []
    for _ in range(n_syllables):
        dur = rng.uniform(0.1, 0.22)
        m = int(dur * sr)
        t = np.arange(m) / sr
        vowel = _VOWELS[rng.integers(len(_VOWELS))]
        pitch = f0 * (1 + 0.05 * rng.standard_normal()) * (1 + 0.15 * np.sin(np.pi * t / dur) * rng.uniform(-1, 1))
        phase = np.cumsum(pitch) / sr
        src = 2 * (phase % 1.0) - 1 + 0.05 * rng.standard_normal(m)
        voice = sum(g * sosfilt(butter(1, [f * 0.93, f * 1.07], "bandpass", fs=sr, output="sos"), src)
                    for f, g in zip(vowel[:3], (1.0, 0.6, 0.3), strict=True))
        voice *= np.clip(t / 0.015, 0, 1) * np.clip((dur - t) / 0.03, 0, 1)
        if rng.random() < 0.6:  # a fricative or a plosive burst before the vowel
            c = int(rng.uniform(0.02, 0.07) * sr)
            hiss = sosfilt(butter(2, rng.uniform(2500, 5000), "highpass", fs=sr, output="sos"), rng.standard_normal(c))
            hiss *= np.linspace(1, 0.3, c) * 0.25 * np.abs(voice).max() / (np.abs(hiss).max() + 1e-9)
            voice = np.concatenate([hiss, voice])
        parts.append(voice)
        rounds.append(np.full(len(voice), vowel[3]))
        gap = int(rng.uniform(0.0, 0.04) * sr)
        parts.append(np.zeros(gap))
        rounds.append(np.full(gap, 0.3))
    out = np.concatenate(parts)
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32), np.concatenate(rounds)


def _spoken(text: str, sr: int, rng: np.random.Generator, pitch: int) -> np.ndarray | None:
    """Words from :mod:`avmatch.speech` when it can speak on this machine, else None."""
    try:
        from avmatch import speech
    except ImportError:
        return None
    if not speech.speech_available():
        return None
    voices = getattr(speech, "VOICES", ("en",))
    said = speech.say(text, sr, voice=str(voices[rng.integers(len(voices))]), speed_wpm=int(rng.integers(130, 210)),
                      pitch=pitch)
    if said is None or not len(said):
        return None
    loud = np.flatnonzero(np.abs(said) > 0.05 * np.abs(said).max())
    return np.asarray(said[loud[0] : loud[-1] + 1], np.float32) if len(loud) else None


def _onsets(x: np.ndarray, sr: int, hop_s: float = 0.01, pause_s: float = 0.08) -> np.ndarray:
    """Seconds at which ``x`` starts sounding after a pause of at least ``pause_s`` (and at 0)."""
    hop = int(hop_s * sr)
    m = len(x) // hop
    env = np.sqrt((x[: m * hop].reshape(m, hop).astype(np.float64) ** 2).mean(1))
    active = env > 0.04 * env.max()
    quiet_run = 0
    starts = []
    for i, on in enumerate(active):
        if on and (not starts or quiet_run * hop_s >= pause_s):
            starts.append(i)
        quiet_run = 0 if on else quiet_run + 1
    return np.array(starts) * hop_s


def _say_generated(rng: np.random.Generator, sr: int, size: float, f0: float) -> tuple[np.ndarray, np.ndarray]:
    """Words from eSpeak, else formant babble at pitch ``f0``; (audio, roundness per sample)."""
    words = ", ".join(rng.choice(_WORDS, int(rng.integers(1, 4))))  # commas: pauses between words
    said = _spoken(words, sr, rng, pitch=int(20 + 60 * (1 - size)))
    if said is None:
        return _formant_babble(sr, rng, f0, int(rng.integers(1, 4)))
    return said, np.full(len(said), 0.3)


def _say_recorded(rng: np.random.Generator, sr: int, size: float, f0: float,
                  max_s: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_s`` of speech recorded by a person (:mod:`avmatch.demo.recordings`)."""
    said = recordings.utterance(rng, "speech", max_s, sr)
    if said is None:
        raise RuntimeError(recordings.MISSING)
    return said, np.full(len(said), 0.3)


@_family("mouth")
def _mouth(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """Close-up lips opening with the loudness of the voice; bigger lips, lower voice."""
    _lips(scene, cv, rng, _say_generated)


@_family("talk")
def _talk(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """Close-up lips opening with the loudness of what real people said (recorded speech): phrases with
    pauses between, or (half the scenes) talk that runs on, stretches of up to 4 s with short breaths."""
    on = rng.random() < 0.5
    say = (lambda r, sr, size, f0: _say_recorded(r, sr, size, f0, 4.0)) if on else _say_recorded
    _lips(scene, cv, rng, say, (0.02, 0.2) if on else (0.15, 0.7))


def _lips(scene: Scene, cv: _Canvas, rng: np.random.Generator, say,
          pause_s: tuple[float, float] = (0.15, 0.7)) -> None:
    sr, times, aspect = scene.sample_rate, scene.frame_times(), cv.aspect
    n = len(scene.audio)
    size = rng.random()
    f0 = 95.0 * 2 ** (1.3 * (1 - size) + rng.uniform(-0.1, 0.1))
    voice = np.zeros(n, np.float32)
    roundness = np.full(n, 0.3)
    t = rng.uniform(0.02, 0.5)
    while t < scene.duration_s - 0.25:
        said, rnd = say(rng, sr, size, f0)
        add_sound(voice, sr, t, said, _level(rng, 3))
        i0 = int(round(t * sr))
        roundness[i0 : i0 + len(rnd)] = rnd[: n - i0]
        scene.events_s.extend((t + _onsets(said, sr)).tolist())
        t += len(said) / sr + rng.uniform(*pause_s)
    # loudness per frame (the frame's own 40 ms), from the voice alone, drives the lips
    hop = sr / scene.fps
    idx = (np.arange(len(times)) * hop).astype(int)
    energy = np.sqrt(np.add.reduceat(voice.astype(np.float64) ** 2, idx) / hop)
    energy = energy / (energy.max() + 1e-9)
    opening = np.clip((energy - 0.05) / 0.5, 0, 1)
    rnd = roundness[np.minimum(idx + int(hop / 2), n - 1)]
    scene.audio += voice
    cx, cy = rng.uniform(0.4, 0.6), aspect * rng.uniform(0.45, 0.55)
    rx = 0.22 + 0.12 * size
    sway = np.cumsum(rng.normal(0, 0.002, (2, len(times))), axis=1)
    lip = np.array([rng.uniform(0.6, 1.0), rng.uniform(0.05, 0.3), rng.uniform(0.1, 0.5)], np.float32)
    skin = np.array([0.95, 0.75, 0.6], np.float32) * rng.uniform(0.35, 1.0) + rng.uniform(-0.05, 0.05, 3).astype(np.float32)
    cv.shape(sd_ellipse, cx + sway[0], cy + sway[1], rx * 1.3, skin, rx=rx * 1.25, ry=rx * 0.75)
    wide = rx * (1.0 - 0.35 * rnd)
    gap = rx * (0.04 + 0.4 * opening)
    cv.shape(sd_ellipse, cx + sway[0], cy + sway[1], rx * 1.1, lip, rx=wide, ry=gap + 0.12 * rx)
    cv.shape(sd_ellipse, cx + sway[0], cy + sway[1], rx * 1.1, (0.12, 0.02, 0.04), rx=wide * 0.8, ry=gap)
    cv.shape(sd_box, cx + sway[0], cy + sway[1] - gap * 0.8, rx, (0.95, 0.95, 0.9), alpha=np.clip(opening * 3, 0, 1),
             rx=wide * 0.45, ry=gap * 0.22)


ACTIONS = ("flash", "jump", "pulse", "recolour", "drop", "shake", "toggle", "glow", "swell")
HELD = ("glow", "swell")  # changes that last a while (0.1-0.6 s) and sound for exactly as long


def _held_sound(sr: int, f: float, dur_s: float, kind: int, rng: np.random.Generator) -> np.ndarray:
    """A sound that lasts ``dur_s`` and stops: a harmonic tone, a buzz or a band of noise at ``f``,
    with a 5 ms attack and a 10 ms release."""
    t = np.arange(max(1, int(dur_s * sr))) / sr
    if kind == 0:
        x = sum(rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * f * h * t) for h in (1, 2, 3))
    elif kind == 1:  # a buzz: a square wave, softened
        x = sosfilt(butter(2, min(6 * f, 0.45 * sr), fs=sr, output="sos"), np.sign(np.sin(2 * np.pi * f * t)))
    else:
        x = sosfilt(butter(2, [f / 1.5, min(f * 1.5, 0.45 * sr)], btype="bandpass", fs=sr, output="sos"),
                    rng.standard_normal(len(t)))
    x = x / (np.abs(x).max() + 1e-9)
    return (x * np.minimum(1.0, t / 0.005) * np.minimum(1.0, (t[-1] - t) / 0.01 + 1e-3)).astype(np.float32)


def _voice(rng: np.random.Generator, sr: int) -> Callable[..., np.ndarray]:
    """One object's sound: a random kind of source at a random pitch, varied a little each time;
    ``sound(dur_s)`` is the object's held sound, lasting that long."""
    f0 = float(2 ** rng.uniform(np.log2(90), np.log2(2500)))
    kind = int(rng.integers(8))

    def sound(dur_s: float | None = None) -> np.ndarray:
        f = f0 * 2 ** rng.uniform(-0.05, 0.05)
        if dur_s is not None:
            return _held_sound(sr, min(f, 2000.0), dur_s, kind % 3, rng)
        if kind == 0:
            return membrane(sr, min(f, 600.0), rng, rng.uniform(0.08, 0.3))
        if kind == 1:
            return fm_bell(sr, f, rng, rng.uniform(0.2, 0.8))
        if kind == 2:
            return bubble(sr, min(f, 1500.0), rng)
        if kind == 3:
            return pluck(sr, min(f, 1200.0), rng, rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.9))
        if kind == 4:
            return wood_thud(sr, min(f, 1500.0), rng)
        if kind == 5:
            return whoosh(sr, rng, rng.uniform(0.1, 0.3))
        t = np.arange(int(rng.uniform(0.06, 0.35) * sr)) / sr
        if kind == 6:  # a beep: a few harmonics, a quick attack, a decay
            x = sum(rng.uniform(0.1, 1.0) / h * np.sin(2 * np.pi * f * h * t) for h in (1, 2, 3))
        else:  # a band of noise around f
            x = sosfilt(butter(2, [f / 1.5, min(f * 1.5, 0.45 * sr)], btype="bandpass", fs=sr, output="sos"),
                        rng.standard_normal(len(t)))
        return (x * np.minimum(1.0, t / 0.004) * np.exp(-t / (t[-1] / 3 + 1e-3))).astype(np.float32)
    return sound


def _actor(scene: Scene, cv: _Canvas, rng: np.random.Generator, sounding: bool) -> list[float]:
    """One object that does visible things at random times (which thing: its own, or each time
    another), making its own sound at that moment when ``sounding``. Returns the event times."""
    sr, times, aspect = scene.sample_rate, scene.frame_times(), cv.aspect
    n = len(times)
    sdf, keys = [(sd_ellipse, ("rx", "ry")), (sd_box, ("rx", "ry")), (sd_ring, ("r",)), (sd_diamond, ("r",)),
                 (sd_triangle, ("r",)), (sd_cross, ("r",))][int(rng.integers(6))]
    extra = {sd_ring: {"thick": 0.012}, sd_cross: {"arm": 0.015}}.get(sdf, {})
    r = rng.uniform(0.04, 0.11)
    cx = np.full(n, rng.uniform(r + 0.05, 0.95 - r), np.float32)
    cy = np.full(n, aspect * rng.uniform(0.2, 0.85), np.float32)
    if rng.random() < 0.5:  # a slow drift
        cx += (rng.uniform(-0.08, 0.08) * times).astype(np.float32)
        cy += (rng.uniform(-0.05, 0.05) * times).astype(np.float32)
    scale = np.ones(n, np.float32)
    colour = np.tile(_colour(rng), (n, 1))
    alpha = np.ones(n, np.float32)
    own = str(rng.choice(ACTIONS)) if rng.random() < 0.7 else ""
    voice = _voice(rng, sr)
    events = _event_times(rng, scene.duration_s - 0.05, rng.uniform(0.6, 2.0), 0.25, 0.05)
    for t0 in events:
        action = own or str(rng.choice(ACTIONS))
        age = (times - t0).astype(np.float32)
        after = age >= 0
        held_s = float(rng.uniform(0.1, 0.6)) if action in HELD else None
        if action == "glow":  # lights up and stays lit while it sounds
            colour += (np.clip(1.2 - colour, 0, 1) * 0.8 * (after & (age < held_s))[:, None]).astype(np.float32)
        elif action == "swell":  # grows and stays bigger while it sounds
            scale *= (1 + 0.5 * (after & (age < held_s))).astype(np.float32)
        elif action == "flash":
            colour += (np.clip(1.2 - colour, 0, 1) * np.where(after, np.exp(-np.maximum(age, 0) / 0.12), 0)[:, None]).astype(np.float32)
        elif action == "jump":
            cx += np.where(after, rng.uniform(-0.25, 0.25), 0).astype(np.float32)
            cy += np.where(after, aspect * rng.uniform(-0.2, 0.2), 0).astype(np.float32)
        elif action == "pulse":
            scale *= (1 + np.where(after, rng.uniform(0.3, 0.7) * np.exp(-np.maximum(age, 0) / 0.1), 0)).astype(np.float32)
        elif action == "recolour":
            colour[after] = _colour(rng)
        elif action == "drop":  # falls from above and lands at t0
            fall = rng.uniform(0.15, 0.35)
            cy -= np.where((age < 0) & (age > -fall), 4.0 * age ** 2 / fall, 0).astype(np.float32)
        elif action == "shake":
            cx += np.where(after & (age < 0.15), 0.03 * np.sin(age * 2 * np.pi * 25), 0).astype(np.float32)
        else:  # toggle: appears (or vanishes) at t0
            alpha = np.where(after, 1 - alpha[np.searchsorted(times, t0) - 1] if t0 > 0 else 1.0, alpha).astype(np.float32)
        if sounding:
            add_sound(scene.audio, sr, float(t0), voice(held_s), _level(rng, 4))
    cx, cy = np.clip(cx, 0.02, 0.98), np.clip(cy, 0.02, aspect - 0.02)
    size = {k: r * scale for k in keys}
    cv.shape(sdf, cx, cy, r * scale * 1.5 + 0.01, np.clip(colour, 0, 1), alpha=alpha, **size, **extra)
    return events.tolist()


@_family("events")
def _events(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """Cause and effect at random, for training: one to three objects, each with its own look and its
    own voice, do visible things at random times (flash, jump, swell, change colour, drop, shake,
    appear; or light up or grow and stay so for a while) and sound at that moment (for as long as a
    held change lasts), beside one or two that do the same things in silence. Nothing
    ties what is seen to what is heard but *when*: a model learns timing, not one family's looks."""
    for _ in range(int(rng.integers(1, 4))):
        scene.events_s.extend(_actor(scene, cv, rng, sounding=True))
    for _ in range(int(rng.integers(0, 3))):
        _actor(scene, cv, rng, sounding=False)


def available_families() -> list[str]:
    """Every family runs on any machine (``mouth`` falls back to its own babble without speech) but
    ``talk``, which needs the recordings of :mod:`avmatch.demo.recordings`."""
    return [f for f in FAMILIES if f != "talk" or recordings.available_sources("speech")]


# ------------------------------------------------------------------------------- what has no sound

def _smooth_path(rng: np.random.Generator, times: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A Lissajous-like wander inside [lo, hi]: two random sines."""
    f = rng.uniform(0.05, 0.6, 2)
    ph = rng.uniform(0, 2 * np.pi, 2)
    u = 0.5 + 0.3 * np.sin(2 * np.pi * f[0] * times + ph[0]) + 0.2 * np.sin(2 * np.pi * f[1] * times + ph[1])
    return lo + (hi - lo) * u


def _distractors(scene: Scene, cv: _Canvas, rng: np.random.Generator) -> None:
    """Silent shapes wandering about and silent lights blinking: motion and change without sound."""
    times, aspect = scene.frame_times(), cv.aspect
    kinds = [(sd_diamond, ("r",)), (sd_triangle, ("r",)), (sd_cross, ("r", "arm")), (sd_ring, ("r", "thick"))]
    for _ in range(int(rng.integers(1, 4))):
        sdf, names = kinds[rng.integers(len(kinds))]
        r = rng.uniform(0.04, 0.1)
        args = dict(zip(names, (r, r * 0.3), strict=False))
        x = _smooth_path(rng, times, 0.05, 0.95)
        y = _smooth_path(rng, times, 0.05, aspect - 0.05)
        cv.shape(sdf, x, y, r * 1.2, _colour(rng), alpha=rng.uniform(0.6, 1.0), **args)
    if rng.random() < 0.4:
        blinks = _event_times(rng, scene.duration_s, rng.uniform(0.5, 2.0), 0.2)
        on = (_since(times, blinks) < rng.uniform(0.1, 0.3)).astype(np.float32)
        r = rng.uniform(0.03, 0.06)
        colour = _colour(rng)[None, :] * (0.3 + 0.7 * on[:, None])
        cv.shape(sd_ellipse, rng.uniform(0.05, 0.95), rng.uniform(0.05, aspect - 0.05), r, colour, rx=r, ry=r)


def _uncaused(scene: Scene, rng: np.random.Generator) -> None:
    """Sounds from off screen: drums, plucks, plops, bells and whooshes nobody sees."""
    sr = scene.sample_rate
    for _ in range(min(4, int(rng.poisson(1.2)))):
        t0 = rng.uniform(0.0, scene.duration_s - 0.1)
        kind = rng.integers(5)
        if kind == 0:
            sound = membrane(sr, rng.uniform(80, 400), rng, rng.uniform(0.1, 0.3))
        elif kind == 1:
            sound = pluck(sr, rng.uniform(120, 700), rng, rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8))
        elif kind == 2:
            sound = bubble(sr, rng.uniform(400, 2000), rng, rng.uniform(0.02, 0.06))
        elif kind == 3:
            sound = fm_bell(sr, rng.uniform(300, 1500), rng, rng.uniform(0.2, 0.6))
        else:
            sound = whoosh(sr, rng, rng.uniform(0.3, 1.0))
        add_sound(scene.audio, sr, t0, sound, rng.uniform(0.2, 0.6))
        scene.uncaused_s.append(float(t0))
    scene.uncaused_s.sort()


# ------------------------------------------------------------------------------------------- scenes

def make_scene(seed: int | list[int], family: str | None = None, duration_s: float = 4.0,
               size: tuple[int, int] = (64, 64), fps: float = FPS, sample_rate: int = SAMPLE_RATE,
               families: list[str] | None = None) -> Scene:
    """Render one scene: ``family`` by name, or one drawn from ``families`` (default: all).
    ``size`` is (width, height)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(8)]  # one per part
    pick = families or available_families()
    family = family or str(streams[0].choice(pick))
    if family not in FAMILIES:
        raise ValueError(f"unknown worlds family {family!r}; known: {', '.join(FAMILIES)}")
    w, h = size
    n_frames = int(round(duration_s * fps))
    scene = Scene(family, np.empty((n_frames, h, w, 3), np.float32),
                  np.zeros(int(round(n_frames / fps * sample_rate)), np.float32), fps, sample_rate)
    cv = _Canvas(np.empty((3, n_frames, h, w), np.float32), *_camera(streams[1], n_frames, w, h, fps))
    _background(cv, streams[2])
    behind = streams[3].random() < 0.5  # distractors in front of the family's objects or behind them
    if behind:
        _distractors(scene, cv, streams[3])
    FAMILIES[family](scene, cv, streams[4])
    if not behind:
        _distractors(scene, cv, streams[3])
    scene.events_s = sorted(t for t in scene.events_s if 0.0 <= t < scene.duration_s)
    _uncaused(scene, streams[5])
    _lighting(cv.planes, streams[6], fps)
    extra = streams[7]
    scene.frames = cv.frames()
    peak = np.abs(scene.audio).max() + 1e-9
    scene.audio *= np.float32(0.2 * 10 ** (extra.uniform(-12, 12) / 20) / peak)  # whole-track level, ±12 dB
    # noise against the sounds' loud parts (not their peak: speech's RMS lies ~15 dB under its peak)
    windows = scene.audio[: len(scene.audio) // 320 * 320].reshape(-1, 320)
    loud_rms = float(np.sqrt(np.quantile((windows.astype(np.float64) ** 2).mean(1), 0.9)))
    snr_db = extra.uniform(12.0, 30.0)
    scene.audio += np.float32(loud_rms * 10 ** (-snr_db / 20)) * ambience(len(scene.audio), extra, sample_rate)
    np.clip(scene.audio, -1.0, 1.0, out=scene.audio)
    return scene


def make_corpus(out_dir: str | Path, n: int, duration_s: float = 4.0, seed: int = 0, size: tuple[int, int] = (64, 64),
                first: int = 0, families: list[str] | None = None, workers: int = 1, progress: bool = False) -> list[Path]:
    """Write ``n`` paired clips of this generator's scenes (``clipNNNNN.mp4``, H.264 + AAC) and
    ``scenes.jsonl`` (``generator: "worlds"``) into ``out_dir``; clip i from seed ``[seed, first + i]``,
    as :func:`avmatch.demo.scenes.make_corpus` does. Returns the paths, in order."""
    return write_corpus(make_scene, GENERATOR, out_dir, n, duration_s, seed, size, first,
                        families or available_families(), workers, progress)
