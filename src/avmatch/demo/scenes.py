"""Scene generator: short media files in which what is seen causes what is heard.

Every clip is one scene of a *family*; an on-screen event makes a sound whose pitch, timbre or
loudness is tied to what is seen, at a time the scene draws at random, so both the content and the
timing of a clip identify its sound:

  bounce   a ball bounces off the floor and walls; each impact knocks, pitched by the ball's size
  lamps    lamps light up at random times and hum while lit; a lamp's colour sets its pitch
  motor    a cart starts and stops; its buzz grows louder and higher with its speed; its size sets
           the buzz's base pitch
  talker   a face says vowel syllables; the mouth opens with the voice, the vowel sets its shape,
           the face's size the voice's pitch
  speech   the same face saying words spoken by eSpeak NG (:mod:`avmatch.speech`; wherever it can speak)

And, to keep the task honest, every scene also has: silent moving distractors (which bounce off
walls without a sound), sounds with no on-screen cause, background noise (white, pink or brown, at
times a mains hum), a textured background and sensor noise on the picture.

:func:`make_corpus` writes paired clips (H.264 + AAC in one .mp4); :func:`make_test_set` turns paired
clips into what a user has: silent videos and separate audio files under random names, each audio
shifted by a random offset, plus the key (``video,audio,offset_s``). Everything is deterministic per
seed (given the same set of available families).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from scipy.signal import lfilter

from avmatch import speech
from avmatch.atomic import atomic_path, write_text
from avmatch.demo import recordings
from avmatch.media import FPS, SAMPLE_RATE, process_pool, write_media
from avmatch.testing.mediagen import random_names, shift_audio

# ------------------------------------------------------------------------------------------ a scene

@dataclass
class Scene:
    """One rendered clip before encoding."""

    family: str
    frames: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    audio: np.ndarray  # (n,) float32 mono at sample_rate
    fps: float
    sample_rate: int
    events_s: list[float] = field(default_factory=list)  # onsets of the sounds with an on-screen cause
    uncaused_s: list[float] = field(default_factory=list)  # onsets of the sounds without one

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    def frame_times(self) -> np.ndarray:
        return np.arange(len(self.frames)) / self.fps

    def sample_times(self) -> np.ndarray:
        return np.arange(len(self.audio)) / self.sample_rate


# ------------------------------------------------------------------------------------------ drawing

def _hsv(hue: float, sat: float = 0.85, val: float = 1.0) -> np.ndarray:
    """An RGB colour in [0, 1] from hue, saturation, value."""
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return (val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)


def _blend(img: np.ndarray, y0: int, x0: int, alpha: np.ndarray, colour: np.ndarray) -> None:
    a = alpha[..., None]
    patch = img[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]]
    patch *= 1.0 - a
    patch += a * colour


def _box(img: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> tuple[int, int, int, int] | None:
    h, w = img.shape[:2]
    x0, x1 = max(0, int(np.floor(cx - rx - 1))), min(w, int(np.ceil(cx + rx + 1)))
    y0, y1 = max(0, int(np.floor(cy - ry - 1))), min(h, int(np.ceil(cy + ry + 1)))
    return (y0, y1, x0, x1) if x0 < x1 and y0 < y1 else None


def draw_ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, colour, alpha: float = 1.0) -> None:
    """An anti-aliased filled ellipse (centre and radii in pixels, sub-pixel positions allowed)."""
    box = _box(img, cx, cy, rx, ry)
    if box is None or rx <= 0 or ry <= 0:
        return
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = np.hypot((xx + 0.5 - cx) / rx, (yy + 0.5 - cy) / ry)
    cover = np.clip((1.0 - d) * min(rx, ry) + 0.5, 0.0, 1.0) * alpha
    _blend(img, y0, x0, cover, np.asarray(colour, np.float32))


def draw_disc(img: np.ndarray, cx: float, cy: float, r: float, colour, alpha: float = 1.0) -> None:
    draw_ellipse(img, cx, cy, r, r, colour, alpha)


def draw_rect(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, colour, alpha: float = 1.0) -> None:
    """An axis-aligned filled rectangle with exact pixel coverage at its edges."""
    box = _box(img, cx, cy, rx, ry)
    if box is None or rx <= 0 or ry <= 0:
        return
    y0, y1, x0, x1 = box
    xs, ys = np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32)
    cover_x = np.clip(np.minimum(xs + 1, cx + rx) - np.maximum(xs, cx - rx), 0.0, 1.0)
    cover_y = np.clip(np.minimum(ys + 1, cy + ry) - np.maximum(ys, cy - ry), 0.0, 1.0)
    _blend(img, y0, x0, np.outer(cover_y, cover_x) * alpha, np.asarray(colour, np.float32))


def _fold(x: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Free motion folded into [lo, hi] as if reflected by walls: (position, wall-hit count so far)."""
    span = max(hi - lo, 1e-6)
    u = x - lo
    hits = np.floor(u / span)
    m = np.mod(u, 2 * span)
    return lo + np.where(m > span, 2 * span - m, m), hits


def _background(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w, 3): a dim colour with a gradient and a fixed texture, the same in every frame."""
    base = _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.15, 0.45))
    tilt = _hsv(rng.random(), rng.uniform(0.1, 0.5), rng.uniform(0.0, 0.25)) - 0.12
    ramp = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None, None]
    texture = rng.normal(0.0, rng.uniform(0.005, 0.03), (h // 4 + 1, w // 4 + 1, 1)).astype(np.float32)
    texture = np.kron(texture, np.ones((4, 4, 1), np.float32))[:h, :w]
    img = np.clip(base + ramp * tilt + texture, 0.0, 1.0)
    return np.broadcast_to(img, (n, h, w, 3)).copy()


def _bright_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.75, 1.0))


# ------------------------------------------------------------------------------------------- sounds

def add_sound(audio: np.ndarray, sample_rate: int, t0_s: float, sound: np.ndarray, gain: float = 1.0) -> None:
    """Mix ``sound`` into ``audio`` starting at ``t0_s`` (clipped at both ends of the track)."""
    i0 = int(round(t0_s * sample_rate))
    s0 = max(0, -i0)
    i0 = max(0, i0)
    n = min(len(audio) - i0, len(sound) - s0)
    if n > 0:
        audio[i0 : i0 + n] += gain * sound[s0 : s0 + n]


def knock(sample_rate: int, freq_hz: float, decay_s: float, rng: np.random.Generator) -> np.ndarray:
    """An impact: a damped sine with a weaker overtone and a 3 ms click of noise at its start."""
    n = int(sample_rate * decay_s * 5)
    t = np.arange(n) / sample_rate
    env = np.exp(-t / decay_s)
    ratio = rng.uniform(2.2, 2.9)  # inharmonic overtone: struck objects are not strings
    out = env * (np.sin(2 * np.pi * freq_hz * t) + 0.35 * np.exp(-t / (decay_s / 2)) * np.sin(2 * np.pi * freq_hz * ratio * t))
    click = int(0.003 * sample_rate)
    out[:click] += 0.5 * rng.standard_normal(click) * np.linspace(1, 0, click)
    return out.astype(np.float32)


def tone(sample_rate: int, freq_hz: float, dur_s: float, harmonics: tuple[float, ...] = (1.0, 0.4, 0.15),
         attack_s: float = 0.005, release_s: float = 0.02) -> np.ndarray:
    """A steady harmonic tone with a quick attack and release."""
    n = int(round((dur_s + release_s) * sample_rate))
    t = np.arange(n) / sample_rate
    out = sum(a * np.sin(2 * np.pi * freq_hz * (k + 1) * t) for k, a in enumerate(harmonics))
    env = np.clip(t / attack_s, 0, 1) * np.clip((dur_s + release_s - t) / release_s, 0, 1)
    return (out * env / sum(harmonics)).astype(np.float32)


def noise_burst(sample_rate: int, dur_s: float, rng: np.random.Generator, colour: float = 0.0) -> np.ndarray:
    """A burst of noise with a fast attack and exponential decay (colour 0: white; towards 1: darker)."""
    n = int(dur_s * sample_rate)
    x = rng.standard_normal(n)
    if colour > 0:
        x = lfilter([1 - colour], [1, -colour], x)
        x /= np.abs(x).max() + 1e-9
    env = np.exp(-np.arange(n) / (0.3 * n)) * np.clip(np.arange(n) / (0.002 * sample_rate), 0, 1)
    return (x * env).astype(np.float32)


def _resonator(x: np.ndarray, freq_hz: float, bandwidth_hz: float, sample_rate: int) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth_hz / sample_rate)
    theta = 2 * np.pi * freq_hz / sample_rate
    return lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)


def background_noise(n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Unit-RMS background noise: white, pink-ish or brown-ish, at times with a mains hum."""
    kind = rng.choice(["white", "pink", "brown"])
    x = rng.standard_normal(n)
    if kind == "pink":
        x = lfilter([1.0], [1.0, -0.9], x) + 0.5 * x
    elif kind == "brown":
        x = lfilter([1.0], [1.0, -0.99], x)
        x -= lfilter([0.02], [1.0, -0.98], x)  # take out the slow drift
    if rng.random() < 0.3:
        t = np.arange(n) / sample_rate
        f = rng.choice([50.0, 60.0])
        x = x / (x.std() + 1e-9) + rng.uniform(0.5, 2.0) * (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 3 * f * t))
    return (x / (x.std() + 1e-9)).astype(np.float32)


def _poisson_times(rng: np.random.Generator, start_s: float, end_s: float, mean_gap_s: float, min_gap_s: float) -> list[float]:
    """Random event times in [start_s, end_s): gaps of min_gap_s plus an exponential part."""
    times, t = [], start_s + rng.uniform(0, mean_gap_s)
    while t < end_s:
        times.append(float(t))
        t += min_gap_s + rng.exponential(max(mean_gap_s - min_gap_s, 1e-3))
    return times


# ----------------------------------------------------------------------------------------- families

FamilyFn = Callable[[Scene, np.random.Generator], None]
FAMILIES: dict[str, FamilyFn] = {}


def _family(name: str):
    def register(fn: FamilyFn) -> FamilyFn:
        FAMILIES[name] = fn
        return fn
    return register


def _size_unit(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


@_family("bounce")
def _bounce(scene: Scene, rng: np.random.Generator) -> None:
    """Balls bounce; each floor or wall impact knocks, lower for a bigger ball, louder when harder."""
    h, w = scene.height, scene.width
    times = scene.frame_times()
    n_balls = 1 if rng.random() < 0.7 else 2
    for _ in range(n_balls):
        r = rng.uniform(0.045, 0.14) * w
        size = _size_unit(r / w, 0.045, 0.14)
        freq = 220.0 * 2.0 ** (3.0 * (1.0 - size) + rng.uniform(-0.15, 0.15))  # 220..1760 Hz
        decay = 0.03 + 0.06 * size
        colour = _bright_colour(rng)
        g = h * rng.uniform(5.0, 9.0)  # px/s^2
        floor, ceil_ = h - 2 - r, r + 2
        left, right = r + 1, w - r - 1
        x, y = rng.uniform(left, right), rng.uniform(ceil_, floor)
        vx = rng.choice([-1, 1]) * rng.uniform(0.1, 0.6) * w
        vy = rng.uniform(-1, 1) * np.sqrt(2 * g * (floor - ceil_)) * 0.5
        restitution = rng.uniform(0.65, 0.85)
        rest_until = -1.0
        dt = 1.0 / 2000
        t = -1.0  # start before the clip so it does not always open the same way
        frame_k = 0
        xs, ys = np.zeros(len(times)), np.zeros(len(times))
        end = scene.duration_s
        while t < end:
            while frame_k < len(times) and times[frame_k] <= t:
                xs[frame_k], ys[frame_k] = x, y
                frame_k += 1
            if t < rest_until:  # resting on the floor, then kicked up again
                t += dt
                if t >= rest_until:
                    vy = -np.sqrt(2 * g * (floor - ceil_) * rng.uniform(0.3, 1.0))
                    vx = rng.choice([-1, 1]) * rng.uniform(0.1, 0.6) * w
                continue
            vy += g * dt
            x += vx * dt
            y += vy * dt
            speed = None
            if y >= floor and vy > 0:
                y = floor - (y - floor)
                speed = vy
                vy = -vy * restitution
                if abs(vy) < 0.25 * np.sqrt(2 * g * (floor - ceil_)):
                    y, vy, vx = floor, 0.0, vx * 0.3
                    rest_until = t + rng.uniform(0.05, 0.6)
            if x <= left or x >= right:
                x = 2 * (left if x <= left else right) - x
                speed = abs(vx) * 0.8 if speed is None else speed
                vx = -vx
            if speed is not None and 0 <= t < end:
                loud = float(np.clip(speed / np.sqrt(2 * g * (floor - ceil_)), 0.15, 1.0))
                add_sound(scene.audio, scene.sample_rate, t, knock(scene.sample_rate, freq, decay, rng), loud)
                scene.events_s.append(float(t))
            t += dt
        for k in range(frame_k, len(times)):
            xs[k], ys[k] = x, y
        for k in range(len(times)):
            draw_disc(scene.frames[k], xs[k], ys[k], r, colour)


@_family("lamps")
def _lamps(scene: Scene, rng: np.random.Generator) -> None:
    """Lamps light up at random times; while lit each hums at a pitch set by its colour."""
    h, w = scene.height, scene.width
    times = scene.frame_times()
    slots = rng.permutation(9)[: rng.integers(1, 4)]
    for slot in slots:
        cx = (slot % 3 + 0.5) * w / 3 + rng.uniform(-0.05, 0.05) * w
        cy = (slot // 3 + 0.5) * h / 3 + rng.uniform(-0.05, 0.05) * h
        r = rng.uniform(0.07, 0.13) * w
        hue = rng.random()
        colour = _hsv(hue, 0.9, 1.0)
        freq = 262.0 * 2.0 ** (3.0 * hue)  # the colour wheel spans three octaves
        square = rng.random() < 0.5
        lit = np.zeros(len(times), bool)
        for t0 in _poisson_times(rng, 0.05, scene.duration_s - 0.1, rng.uniform(0.7, 1.4), 0.25):
            dur = rng.uniform(0.08, 0.4)
            lit |= (times >= t0 - 0.5 / scene.fps) & (times < t0 + dur - 0.5 / scene.fps)
            add_sound(scene.audio, scene.sample_rate, t0, tone(scene.sample_rate, freq, dur), rng.uniform(0.5, 1.0))
            scene.events_s.append(t0)
        draw = draw_rect if square else draw_disc
        for k in range(len(times)):
            c = colour if lit[k] else colour * 0.22
            if square:
                draw(scene.frames[k], cx, cy, r, r, c)
            else:
                draw(scene.frames[k], cx, cy, r, c)


@_family("motor")
def _motor(scene: Scene, rng: np.random.Generator) -> None:
    """A cart starts and stops at random times; its buzz follows its speed, its size sets the pitch."""
    h, w = scene.height, scene.width
    sr = scene.sample_rate
    n = len(scene.audio)
    rx, ry = rng.uniform(0.08, 0.16) * w, rng.uniform(0.05, 0.1) * h
    size = _size_unit(rx / w, 0.08, 0.16)
    base_hz = 70.0 * 2.0 ** (2.0 * (1.0 - size))  # 70..280 Hz
    colour = _bright_colour(rng)
    cy = rng.uniform(0.3, 0.8) * h
    speed = np.zeros(n)
    t = rng.uniform(-0.3, 0.4)
    moving = rng.random() < 0.5
    while t < scene.duration_s:
        dur = rng.uniform(0.2, 0.5) if not moving else rng.uniform(0.3, 0.9)
        if moving:
            v = rng.uniform(0.5, 1.6) * w
            i0, i1 = max(0, int(t * sr)), min(n, int((t + dur) * sr))
            speed[i0:i1] = v
            if t >= 0:
                scene.events_s.append(float(t))
        t += dur
        moving = not moving
    ramp = int(0.02 * sr)
    speed = np.convolve(speed, np.ones(ramp) / ramp, mode="full")[:n]  # 20 ms speed-up and slow-down
    direction = rng.choice([-1.0, 1.0])
    x = rng.uniform(rx, w - rx) + direction * np.cumsum(speed) / sr
    pos, _ = _fold(x, rx + 1, w - rx - 1)
    frame_pos = pos[np.minimum((scene.frame_times() * sr).astype(int), n - 1)]
    vmax = 1.6 * w
    level = speed / vmax
    freq = base_hz * (1.0 + 0.8 * level)
    phase = np.cumsum(freq) / sr
    buzz = 2.0 * (phase % 1.0) - 1.0
    rumble = _resonator(rng.standard_normal(n), base_hz * 4, base_hz * 2, sr)
    rumble /= np.abs(rumble).max() + 1e-9
    add_sound(scene.audio, sr, 0.0, (level * (0.6 * buzz + 0.6 * rumble)).astype(np.float32))
    for k in range(len(frame_pos)):
        draw_rect(scene.frames[k], frame_pos[k], cy, rx, ry, colour)
        for wheel in (-0.6, 0.6):
            draw_disc(scene.frames[k], frame_pos[k] + wheel * rx, cy + ry, ry * 0.45, colour * 0.3)


VOWELS = {  # formants F1, F2 (Hz); mouth opening and width (0..1)
    "a": (800, 1200, 1.0, 0.75),
    "e": (500, 1900, 0.6, 0.85),
    "i": (300, 2300, 0.3, 1.0),
    "o": (500, 900, 0.75, 0.5),
    "u": (320, 800, 0.35, 0.4),
}


def _face(scene: Scene, rng: np.random.Generator, opening: np.ndarray, width: np.ndarray, size: float) -> None:
    """Draw a face of ``size`` (0..1) whose mouth follows ``opening`` and ``width`` (per frame, 0..1)."""
    h, w = scene.height, scene.width
    rx = (0.22 + 0.12 * size) * w
    ry = rx * rng.uniform(1.1, 1.3)
    cx = rng.uniform(rx + 1, w - rx - 1)
    cy = rng.uniform(min(ry + 1, h / 2), max(h - ry - 1, h / 2))
    skin = _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.6, 0.95))
    drift = rng.normal(0, 0.4, (len(opening), 2)).cumsum(0) * 0.15  # a head never stays quite still
    blinks = _poisson_times(rng, 0.0, scene.duration_s, 1.5, 0.4)
    times = scene.frame_times()
    for k in range(len(opening)):
        fx, fy = cx + drift[k, 0], cy + drift[k, 1]
        draw_ellipse(scene.frames[k], fx, fy, rx, ry, skin)
        shut = any(b <= times[k] < b + 0.12 for b in blinks)  # silent blinks
        for side in (-1, 1):
            draw_ellipse(scene.frames[k], fx + side * 0.4 * rx, fy - 0.25 * ry, 0.14 * rx,
                         0.02 * ry if shut else 0.1 * ry, (0.1, 0.1, 0.12))
        mouth_w = 0.25 * rx + 0.25 * rx * width[k]
        mouth_h = 0.04 * ry + 0.28 * ry * opening[k]
        draw_ellipse(scene.frames[k], fx, fy + 0.5 * ry, mouth_w, mouth_h, (0.25, 0.02, 0.05))


def _frame_envelope(scene: Scene, x: np.ndarray) -> np.ndarray:
    """(N,) RMS of ``x`` around each frame time, scaled so the loudest frame is 1."""
    hop = scene.sample_rate / scene.fps
    env = np.array([np.sqrt(np.mean(x[int(k * hop) : int((k + 1) * hop)] ** 2) + 1e-12) for k in range(len(scene.frames))])
    return env / (env.max() + 1e-9)


@_family("talker")
def _talker(scene: Scene, rng: np.random.Generator) -> None:
    """A face says vowel syllables: the mouth opens with the voice; the vowel shapes both."""
    sr = scene.sample_rate
    n = len(scene.audio)
    voice = np.zeros(n, np.float32)
    opening = np.zeros(len(scene.frames))
    width = np.full(len(scene.frames), 0.6)
    times = scene.frame_times()
    size_pick = rng.random()
    f0 = 90.0 * 2.0 ** (1.5 * (1.0 - size_pick) + rng.uniform(-0.1, 0.1))  # bigger face, lower voice
    t = rng.uniform(0.0, 0.5)
    while t < scene.duration_s - 0.1:
        dur = rng.uniform(0.12, 0.35)
        vowel = str(rng.choice(list(VOWELS)))
        f1, f2, open_, wide = VOWELS[vowel]
        m = int(dur * sr)
        tt = np.arange(m) / sr
        pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * tt) - 0.1 * tt / dur)
        pulses = (np.diff(np.floor(np.cumsum(pitch) / sr), prepend=0) > 0).astype(np.float64)
        src = pulses + 0.02 * rng.standard_normal(m)
        sound = _resonator(src, f1, 90, sr) + 0.6 * _resonator(src, f2, 120, sr)
        env = np.clip(tt / 0.02, 0, 1) * np.clip((dur - tt) / 0.05, 0, 1)
        sound = sound * env
        sound /= np.abs(sound).max() + 1e-9
        if rng.random() < 0.5:  # a consonant: a short hiss before the vowel
            hiss = noise_burst(sr, rng.uniform(0.02, 0.05), rng) * 0.3
            sound[: len(hiss)] += hiss[: len(sound)]
        add_sound(voice, sr, t, sound.astype(np.float32), rng.uniform(0.6, 1.0))
        scene.events_s.append(float(t))
        on = (times >= t) & (times < t + dur)
        rise = np.clip((times[on] - t) / 0.06, 0, 1) * np.clip((t + dur - times[on]) / 0.06, 0, 1)
        opening[on] = np.maximum(opening[on], open_ * (0.3 + 0.7 * rise))
        width[on] = wide
        t += dur + rng.uniform(0.08, 0.6)
    _face(scene, rng, opening, width, size_pick)
    scene.audio += voice


_WORDS = ("hello", "table", "window", "seven", "orange", "music", "river", "yellow", "paper", "garden",
          "coffee", "rocket", "banana", "winter", "pencil", "morning", "basket", "thunder", "silver",
          "doctor", "ticket", "button", "monkey", "tiger", "number", "planet", "camera", "dinner")


def espeak_available() -> bool:
    return speech.speech_available()


def _espeak(text: str, rng: np.random.Generator, sample_rate: int, pitch: int) -> np.ndarray | None:
    """``text`` said by eSpeak NG in an English voice and at a speed drawn from ``rng``, or None."""
    voice = str(rng.choice([v for v in speech.VOICES if v.startswith("en")]))
    return speech.say(text, sample_rate, voice=voice, speed_wpm=int(rng.integers(140, 200)), pitch=pitch)


def _say_espeak(rng: np.random.Generator, sample_rate: int, pitch: int) -> np.ndarray | None:
    """One or two words said by eSpeak NG, without its leading and trailing silence, or None."""
    said = _espeak(" ".join(rng.choice(_WORDS, size=int(rng.integers(1, 3)))), rng, sample_rate, pitch)
    if said is None:
        return None
    loud = np.flatnonzero(np.abs(said) > 0.05)
    return said[loud[0] : loud[-1] + 1] if len(loud) else said


def _say_recorded(rng: np.random.Generator, sample_rate: int, pitch: int, max_s: float = 2.5) -> np.ndarray | None:
    """A stretch of up to ``max_s`` of speech recorded by a person (:mod:`avmatch.demo.recordings`), or None."""
    return recordings.utterance(rng, "speech", max_s, sample_rate)


def _talking_face(scene: Scene, rng: np.random.Generator, say, pause_s: tuple[float, float] = (0.15, 0.8)) -> bool:
    """The face says what ``say(rng, sample_rate, pitch)`` gives, with pauses of ``pause_s`` between; the
    mouth opens with the loudness of the speech. False (nothing drawn) when ``say`` has nothing."""
    size = rng.random()
    pitch = int(20 + 60 * (1.0 - size))  # bigger face, lower voice (eSpeak; a recording is as it is)
    voice = np.zeros(len(scene.audio), np.float32)
    t = rng.uniform(0.0, 0.6)
    while t < scene.duration_s - 0.3:
        said = say(rng, scene.sample_rate, pitch)
        if said is None:
            scene.events_s.clear()
            return False
        add_sound(voice, scene.sample_rate, t, said, rng.uniform(0.6, 1.0))
        scene.events_s.append(float(t))
        t += len(said) / scene.sample_rate + rng.uniform(*pause_s)
    env = _frame_envelope(scene, voice)
    opening = np.clip((env - 0.08) / 0.6, 0.0, 1.0)
    width = 0.5 + 0.3 * np.sin(np.arange(len(env)) * rng.uniform(0.3, 0.9))
    _face(scene, rng, opening, width, size)
    scene.audio += voice
    return True


@_family("speech")
def _speech(scene: Scene, rng: np.random.Generator) -> None:
    """The face says words spoken by eSpeak NG; the mouth opens with the loudness of the speech."""
    if not _talking_face(scene, rng, _say_espeak):  # eSpeak failed: say vowels instead, never fail
        _talker(scene, rng)


@_family("voices")
def _voices(scene: Scene, rng: np.random.Generator) -> None:
    """The face says what real people said (recorded speech, many speakers and languages): phrases with
    pauses between, or (half the scenes) talk that runs on, stretches of up to 4 s with short breaths."""
    on = rng.random() < 0.5
    say = (lambda r, sr, pitch: _say_recorded(r, sr, pitch, 4.0)) if on else _say_recorded
    if not _talking_face(scene, rng, say, (0.02, 0.2) if on else (0.15, 0.8)):
        raise RuntimeError(recordings.MISSING)


def available_families() -> list[str]:
    """The families this machine can make (``speech`` needs :func:`avmatch.speech.speech_available`,
    ``voices`` the recordings of :mod:`avmatch.demo.recordings`)."""
    return [f for f in FAMILIES if (f != "speech" or espeak_available())
            and (f != "voices" or recordings.available_sources("speech"))]


# ------------------------------------------------------------------------------- what has no sound

def _distractors(scene: Scene, rng: np.random.Generator, front: bool) -> None:
    """Silent objects drifting across the picture; they bounce off the walls without a sound."""
    h, w = scene.height, scene.width
    times = scene.frame_times()
    for _ in range(int(rng.integers(1, 3))):
        if (rng.random() < 0.3) != front:
            continue
        r = rng.uniform(0.04, 0.12) * w
        colour = _bright_colour(rng) * rng.uniform(0.6, 1.0)
        vx, vy = rng.uniform(-0.7, 0.7, 2) * w
        x0, y0 = rng.uniform(r, w - r), rng.uniform(r, h - r)
        xs, _ = _fold(x0 + vx * times, r, w - r)
        ys, _ = _fold(y0 + vy * times, r, h - r)
        square = rng.random() < 0.5
        for k in range(len(times)):
            if square:
                draw_rect(scene.frames[k], xs[k], ys[k], r, r, colour)
            else:
                draw_disc(scene.frames[k], xs[k], ys[k], r, colour)


def _uncaused(scene: Scene, rng: np.random.Generator) -> None:
    """Sounds with no cause on screen: knocks, beeps and bursts of noise from off-screen."""
    sr = scene.sample_rate
    for _ in range(min(3, int(rng.poisson(1.0)))):
        t = rng.uniform(0.0, scene.duration_s - 0.1)
        kind = rng.integers(3)
        if kind == 0:
            sound = knock(sr, rng.uniform(200, 2000), rng.uniform(0.03, 0.09), rng)
        elif kind == 1:
            sound = tone(sr, rng.uniform(250, 2000), rng.uniform(0.08, 0.3))
        else:
            sound = noise_burst(sr, rng.uniform(0.05, 0.2), rng, colour=rng.uniform(0, 0.9))
        add_sound(scene.audio, sr, t, sound, rng.uniform(0.25, 0.7))
        scene.uncaused_s.append(float(t))


def make_scene(seed: int | list[int], family: str | None = None, duration_s: float = 4.0,
               size: tuple[int, int] = (64, 64), fps: float = FPS, sample_rate: int = SAMPLE_RATE,
               families: list[str] | None = None) -> Scene:
    """Render one scene (``family`` by name, or one drawn from ``families`` / the available ones)."""
    rng = np.random.default_rng(seed)
    families = families or available_families()
    family = family or str(rng.choice(families))
    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; known: {', '.join(FAMILIES)}")
    w, h = size
    n_frames = int(round(duration_s * fps))
    scene = Scene(family, _background(rng, n_frames, h, w), np.zeros(int(round(n_frames / fps * sample_rate)), np.float32),
                  fps, sample_rate)
    sub = [np.random.default_rng(rng.integers(1 << 62)) for _ in range(4)]  # one stream per part
    _distractors(scene, sub[0], front=False)
    FAMILIES[family](scene, sub[1])
    _distractors(scene, sub[0], front=True)
    _uncaused(scene, sub[2])
    scene.events_s.sort()
    extra = sub[3]
    peak = np.abs(scene.audio).max()
    scene.audio *= extra.uniform(0.3, 0.8) / (peak + 1e-9)
    level = float(np.abs(scene.audio).max())
    snr_db = extra.uniform(18.0, 32.0)  # peak of the sounds against the RMS of the noise
    scene.audio += level * 10 ** (-snr_db / 20) * background_noise(len(scene.audio), extra, sample_rate)
    scene.audio = np.clip(scene.audio, -1.0, 1.0)
    scene.frames += extra.standard_normal(scene.frames.shape, dtype=np.float32) * (1.5 / 255)  # sensor noise
    return scene


# ----------------------------------------------------------------------------------------- encoding

# ------------------------------------------------------------------------------------------- corpus

SCENES_FILE = "scenes.jsonl"


def _make_one(make: Callable[..., Scene], generator: str, path: str, seed: list[int], duration_s: float,
              size: tuple[int, int], families: list[str]) -> dict:
    scene = make(seed, duration_s=duration_s, size=size, families=families)
    write_media(path, scene.frames, scene.audio, scene.fps, scene.sample_rate)
    return {"file": Path(path).name, "family": scene.family, "generator": generator, "duration_s": scene.duration_s,
            "events_s": [round(t, 4) for t in scene.events_s], "uncaused_s": [round(t, 4) for t in scene.uncaused_s]}


def write_corpus(make: Callable[..., Scene], generator: str, out_dir: str | Path, n: int, duration_s: float, seed: int,
                 size: tuple[int, int], first: int, families: list[str], workers: int,
                 progress: bool = False) -> list[Path]:
    """The body of every generator's ``make_corpus``: clip i of ``make(seed=[seed, first + i], ...)`` (a
    module-level function, so worker processes can pickle it) into ``out_dir`` plus ``scenes.jsonl``;
    ``progress``: a bar of the clips written."""
    from avmatch.progress import bar

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(first + n - 1)))
    jobs = [(make, generator, str(out / f"clip{first + i:0{width}d}.mp4"), [seed, first + i], duration_s, tuple(size),
             families) for i in range(n)]
    shown, rows = bar(n, f"generate {generator}", "clip", enabled=progress), []
    with process_pool(workers) if workers > 1 and n > 1 else contextlib.nullcontext() as pool:
        made = (pool.map(_make_one, *zip(*jobs, strict=True), chunksize=max(1, n // (8 * workers))) if pool
                else (_make_one(*job) for job in jobs))
        for row in made:
            rows.append(row)
            shown.update(1)
    shown.close()
    write_text(out / SCENES_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    return [Path(j[2]) for j in jobs]


def make_corpus(out_dir: str | Path, n: int, duration_s: float = 4.0, seed: int = 0, size: tuple[int, int] = (64, 64),
                first: int = 0, families: list[str] | None = None, workers: int = 1, progress: bool = False) -> list[Path]:
    """Write ``n`` paired clips (``clip00000.mp4`` ...: H.264 + AAC, 25 fps, ``size`` = (width, height),
    both even) into ``out_dir``, using ``workers`` processes.

    Clip i is drawn from the seed ``[seed, first + i]``, so two calls with different ``first`` make
    disjoint parts of one corpus (a training and a test set). ``scenes.jsonl`` beside the clips says
    each clip's family and the times of its sound events. Returns the paths, in order.
    """
    return write_corpus(make_scene, "scenes", out_dir, n, duration_s, seed, size, first,
                        families or available_families(), workers, progress)


# ------------------------------------------------------------------------------------------ test set

def strip_audio(src: str | Path, dst: str | Path) -> Path:
    """Copy the video stream of ``src`` into ``dst`` without its sound (no re-encoding)."""
    dst = Path(dst)
    with atomic_path(dst) as tmp, av.open(str(src)) as inp, av.open(str(tmp), "w", format="mp4") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
    return dst


def make_test_set(clips: list[str | Path], out_dir: str | Path, seed: int = 0, max_offset_s: float = 1.0,
                  audio_suffix: str = ".wav", sample_rate: int = SAMPLE_RATE) -> Path:
    """What a user has: ``out_dir/videos/*.mp4`` (silent) and ``out_dir/audios/*<suffix>`` under random
    names, each audio shifted by a random offset in ±``max_offset_s``, and ``out_dir/key.csv`` with
    columns ``video,audio,offset_s,source`` (ids are the file names without suffix; ``offset_s``
    positive: the audio starts that many seconds into the video). Returns the key's path."""
    from avmatch.media import read_audio

    out = Path(out_dir)
    rng = np.random.default_rng([seed, 7919])
    taken: set[str] = set()
    v_names = random_names(rng, len(clips), "v", taken)
    a_names = random_names(rng, len(clips), "a", taken)
    offsets = rng.uniform(-max_offset_s, max_offset_s, len(clips))
    rows = []
    for src, vname, aname, off in zip(clips, v_names, a_names, offsets, strict=True):
        strip_audio(src, out / "videos" / f"{vname}.mp4")
        audio = read_audio(src, sample_rate)
        shifted = shift_audio(audio, float(off), sample_rate, np.random.default_rng([seed, len(rows)]))
        write_media(out / "audios" / f"{aname}{audio_suffix}", None, shifted, sample_rate=sample_rate)
        rows.append({"video": vname, "audio": aname, "offset_s": f"{off:.4f}", "source": Path(src).name})
    rows.sort(key=lambda r: r["video"])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["video", "audio", "offset_s", "source"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "key.csv", buf.getvalue())
    return out / "key.csv"
