"""Median pitch (F0) of speech: how a source speaker and a dub voice are matched.

Nothing pinned here tracks pitch (no librosa, pyworld or parselmouth), so this is YIN
(de Cheveigné & Kawahara 2002) in numpy: robust enough for a median over seconds of
speech, which is all voice matching needs.
"""

from __future__ import annotations

import numpy as np


def median_f0(audio: np.ndarray, rate: int, fmin: float = 60.0, fmax: float = 400.0) -> float:
    """Median F0 (Hz) of the voiced frames: those whose aperiodicity (YIN's
    cumulative-mean-normalised difference) is below 0.15, within 30 dB of the loudest."""
    if rate != 16000:
        audio, rate = to_16k(audio, rate), 16000
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    tau_min, tau_max = int(rate / fmax), int(rate / fmin)
    if len(audio) < frame + tau_max:
        return float("nan")
    starts = np.arange(0, len(audio) - frame - tau_max, hop)
    energy = np.array([np.sum(audio[s:s + frame] ** 2) for s in starts])
    loud = energy > energy.max() * 10 ** (-30 / 10)
    pitches = []
    for start in starts[loud]:
        chunk = audio[start:start + frame + tau_max].astype(np.float64)
        diff = _yin_difference(chunk, frame, tau_max)
        cmnd = diff[1:] * np.arange(1, tau_max + 1) / np.maximum(np.cumsum(diff[1:]), 1e-12)
        below = np.nonzero(cmnd[tau_min - 1:] < 0.15)[0]
        if not len(below):
            continue
        tau = below[0] + tau_min - 1
        while tau + 1 < len(cmnd) and cmnd[tau + 1] < cmnd[tau]:
            tau += 1  # walk down to the local minimum
        pitches.append(rate / (tau + 1))
    return float(np.median(pitches)) if pitches else float("nan")


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """``audio`` at 16 kHz by cutting (or padding) its spectrum: band-limited like a
    polyphase resampler, for a median over seconds of speech, without importing
    scipy.signal (1 s, more than the analysis itself in a one-line re-synthesis)."""
    frames = round(len(audio) * 16000 / rate)
    spectrum = np.fft.rfft(np.asarray(audio, dtype=np.float64))
    kept = np.zeros(frames // 2 + 1, dtype=complex)
    kept[:min(len(kept), len(spectrum))] = spectrum[:len(kept)]
    return np.fft.irfft(kept, frames) * (frames / max(len(audio), 1))


def _yin_difference(chunk: np.ndarray, frame: int, tau_max: int) -> np.ndarray:
    """d(tau) = sum_j (x_j - x_{j+tau})^2 for tau in 0..tau_max, by FFT."""
    size = 1 << int(np.ceil(np.log2(len(chunk) + frame)))
    spectrum = np.fft.rfft(chunk, size)
    kernel = np.fft.rfft(chunk[:frame][::-1], size)
    cross = np.fft.irfft(spectrum * kernel, size)[frame - 1:frame + tau_max]
    squares = np.concatenate([[0.0], np.cumsum(chunk ** 2)])
    energy_tau = squares[np.arange(tau_max + 1) + frame] - squares[np.arange(tau_max + 1)]
    return squares[frame] + energy_tau - 2 * cross


def octaves_apart(a: float, b: float) -> float:
    """|log2(a / b)|: 1.0 is an octave, the distance a listener hears between two pitches."""
    return abs(float(np.log2(a / b)))
