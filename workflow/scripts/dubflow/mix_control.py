"""The control track: the voice and the gains that duck the bed under it, as one file.

Python writes it at the voices' own rate (ffmpeg resamples it to ``mix.sample_rate``
inside the graph, :mod:`dubflow.mix_render`): channel 0 is the voice (each line at
``round(start * rate)``, never concatenated, so nothing drifts over a film), channel 1 is
the bed's gain envelope (1.0, or ``-duck_db`` with short ramps while a line plays); with
``band_duck_db``, a channel that takes the bed's speech band further down under lines
(what separation leaves of the original voices sits there); with restored spans, the
original mix's gain. It is written in 10-second blocks with at most one prepared line in
memory, so memory does not grow with the film's length.

Ducking follows the line timings instead of a sidechain compressor: the depth is exactly
``duck_db`` whatever the voice's level, the bed does not pump back up in the pauses between
words, and the envelope is a file, so thousands of lines need no filter expression (an
argument longer than 128 KiB cannot even be passed to a process on Linux).
"""

import bisect
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from dubflow import fit
from dubflow.mix_lines import line_audio
from dubflow.mix_settings import MixSettings

#: The control track is written this many seconds at a time.
BLOCK_S = 10.0
# The bed is fully down by the time a line starts and comes back up after it; two lines
# closer than both ramps together share one dip instead of a short swell between them.
DUCK_ATTACK_S = 0.08
DUCK_RELEASE_S = 0.30
#: mix.restore_dialogue: where a line is not voiced, the original mix (bed + dialogue)
#: plays again. Whisper's segment edges can clip a word's onset or tail, so the span is
#: padded; it stops this far from every voiced line (its source span and where the dub
#: plays), farther than the duck's release, so the original speaker and a dub voice are
#: never heard together and the bed is back at full level before the original returns;
#: the switch is a short crossfade inside the span (bed and original are sample-aligned:
#: the bed is the original minus its dialogue).
RESTORE_PAD_S = 0.15
RESTORE_GUARD_S = 0.35
RESTORE_FADE_S = 0.05
#: Envelope and voice stay float so a loud voice over a loud bed cannot clip before it is
#: normalised.
CONTROL_SUBTYPE = "FLOAT"


def control_channels(band: bool, restore: bool) -> tuple[str, ...]:
    """The control track's channels in order: the voice, the bed's gain, the gain added to
    the bed's speech band (with a band duck), the original mix's gain (with restored spans)."""
    return ("voice", "gain") + (("band",) if band else ()) + (("original",) if restore else ())


def duck_intervals(placements: list[fit.Placement]) -> list[tuple[float, float]]:
    """Seconds during which the bed is down; lines closer than both ramps share one dip."""
    merged: list[list[float]] = []
    for p in placements:
        if p.played_s <= 0:
            continue
        if merged and p.start - merged[-1][1] < DUCK_ATTACK_S + DUCK_RELEASE_S:
            merged[-1][1] = max(merged[-1][1], p.end)
        else:
            merged.append([p.start, p.end])
    return [(a, b) for a, b in merged]


def restore_spans(lines: list[dict], placements: list[fit.Placement],
                  duration: float) -> list[tuple[float, float]]:
    """Where the original dialogue plays again: the lines the dub does not voice (no wav:
    nothing to say, a song, a line emptied in review), padded by RESTORE_PAD_S, minus
    RESTORE_GUARD_S around every voiced line. A voiced line's own source span is kept
    out too, so no segment that was translated and voiced is heard in the original."""
    voiced = {p.id: p for p in placements if p.played_s > 0}
    keep_out = sorted(
        (min(p.start, float(line["start"])) - RESTORE_GUARD_S,
         max(p.end, float(line["end"])) + RESTORE_GUARD_S)
        for line in lines if (p := voiced.get(str(line["id"]))) is not None)
    spans = []
    for line in sorted(lines, key=lambda line: float(line["start"])):
        if str(line["id"]) in voiced:
            continue
        pieces = [(max(0.0, float(line["start"]) - RESTORE_PAD_S),
                   min(duration, float(line["end"]) + RESTORE_PAD_S))]
        for a, b in keep_out:
            pieces = [piece for lo, hi in pieces
                      for piece in ((lo, min(hi, a)), (max(lo, b), hi))]
        spans += [(lo, hi) for lo, hi in pieces if hi - lo > 2 * RESTORE_FADE_S]
    merged: list[list[float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(round(lo, 3), round(hi, 3)) for lo, hi in merged]


def restore_envelope(first: int, count: int, rate: int,
                     spans: list[tuple[float, float]]) -> np.ndarray:
    """Gain of the original mix for frames ``first .. first+count``: 1 inside ``spans``,
    0 outside, with RESTORE_FADE_S linear ramps inside each span."""
    gain = np.zeros(count, dtype=np.float32)
    t = (first + np.arange(count, dtype=np.float64)) / rate
    for a, b in spans:
        if b < t[0] or a > t[-1]:
            continue
        ramp = np.minimum(np.clip((t - a) / RESTORE_FADE_S, 0, 1),
                          np.clip((b - t) / RESTORE_FADE_S, 0, 1))
        np.maximum(gain, ramp.astype(np.float32), out=gain)
    return gain


def gain_envelope(first: int, count: int, rate: int, intervals: list[tuple[float, float]],
                  duck_db: float) -> np.ndarray:
    """Linear bed gain for frames ``first .. first+count``: 1.0, or ``-duck_db`` under lines."""
    return ducked_gain(duck_depth(first, count, rate, intervals), duck_db)


def ducked_gain(depth: np.ndarray, duck_db: float) -> np.ndarray:
    """Linear gain for a duck ``depth`` (0 = none, 1 = all of ``duck_db``)."""
    gain = np.ones(len(depth), dtype=np.float32)
    ducked = np.flatnonzero(depth) if duck_db > 0 else ()
    if len(ducked):
        span = slice(ducked[0], ducked[-1] + 1)
        gain[span] = (10.0 ** (-duck_db * depth[span] / 20.0)).astype(np.float32)
    return gain


def duck_depth(first: int, count: int, rate: int,
               intervals: list[tuple[float, float]]) -> np.ndarray:
    """How far down the bed is for frames ``first .. first+count``, 0 to 1 (all the way).

    The depth ramps linearly in dB: down over DUCK_ATTACK_S ending at the line's start,
    up over DUCK_RELEASE_S starting at its end.
    """
    depth = np.zeros(count, dtype=np.float64)
    if not intervals or count == 0:
        return depth
    t0, t1 = first / rate, (first + count) / rate
    ends = [b for _, b in intervals]
    i = bisect.bisect_left(ends, t0 - DUCK_RELEASE_S)
    while i < len(intervals) and intervals[i][0] - DUCK_ATTACK_S < t1:
        a, b = intervals[i]
        # only the frames this dip touches (a block-wide array per dip took half the stage)
        lo = max(0, math.floor((a - DUCK_ATTACK_S) * rate) - first)
        hi = min(count, math.ceil((b + DUCK_RELEASE_S) * rate) - first + 1)
        if hi > lo:
            t = (first + np.arange(lo, hi, dtype=np.float64)) / rate
            down = np.clip((t - (a - DUCK_ATTACK_S)) / DUCK_ATTACK_S, 0.0, 1.0)
            up = np.clip((b + DUCK_RELEASE_S - t) / DUCK_RELEASE_S, 0.0, 1.0)
            np.maximum(depth[lo:hi], np.minimum(down, up), out=depth[lo:hi])
        i += 1
    return depth


def placed_lines(
    placements: list[fit.Placement], tts_dir: Path, wavs: dict[str, str], cfg: MixSettings,
    workdir: Path, ffmpeg: dict | None, tempo_cache: Path | None = None,
    control_rate: int | None = None, cuts: dict | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame, audio) per line in time order, prepared only when the writer needs it.
    Lines that had to be cut are recorded in ``cuts`` (id -> where and how much)."""
    control_rate = control_rate or cfg.sample_rate
    previous_end = 0
    for p in placements:
        audio = line_audio(p, tts_dir / wavs[p.id], cfg, workdir, ffmpeg, tempo_cache,
                           control_rate, cuts)
        start = round(p.start * control_rate)
        # fit.plan guarantees this; a violation would mean two voices on top of each other.
        assert start >= previous_end, f"line {p.id} overlaps the line before it"
        if len(audio):
            previous_end = start + len(audio)
            yield start, audio


def band_gain(gain: np.ndarray, depth: np.ndarray, band_duck_db: float) -> np.ndarray:
    """What is added to the bed's speech band under the bed's ``gain``: 0, or negative
    under lines (the band's own gain, ``band_duck_db`` further down, minus the bed's)."""
    return gain * (ducked_gain(depth, band_duck_db) - 1.0)


def write_control(
    path: Path, rate: int, frames: int, lines: Iterator[tuple[int, np.ndarray]],
    intervals: list[tuple[float, float]], duck_db: float,
    restored: list[tuple[float, float]] | None = None, band_duck_db: float = 0.0,
) -> None:
    """Write the control track block by block: voice and bed gain; with ``band_duck_db``
    the gain added to the bed's speech band (0, or negative under lines: the band's own
    gain minus the bed's), and with ``restored`` spans the original mix's gain (the bed's
    is lowered to match, so the two crossfade). :func:`control_channels` names them.

    Only the current block and the line being placed are in memory: a two-hour film costs
    the same RAM as a two-minute clip. RF64 because a float track longer than about three hours passes 4 GB.
    """
    block = int(BLOCK_S * rate)
    pending = next(lines, None)
    names = control_channels(band_duck_db > 0, restored is not None)
    column = {name: i for i, name in enumerate(names)}
    with sf.SoundFile(str(path), "w", rate, len(names), CONTROL_SUBTYPE, format="RF64") as out:
        for first in range(0, frames, block):
            last = min(first + block, frames)
            buf = np.zeros((last - first, len(names)), dtype=np.float32)
            depth = duck_depth(first, last - first, rate, intervals)
            buf[:, 1] = ducked_gain(depth, duck_db)
            if "band" in column:
                buf[:, column["band"]] = band_gain(buf[:, 1], depth, band_duck_db)
            if restored is not None:
                buf[:, column["original"]] = restore_envelope(first, last - first, rate,
                                                              restored)
                buf[:, 1] *= 1.0 - buf[:, column["original"]]
            while pending is not None and pending[0] < last:
                start, audio = pending
                lo, hi = max(start, first), min(start + len(audio), last)
                if hi > lo:
                    buf[lo - first:hi - first, 0] = audio[lo - start:hi - start]
                if start + len(audio) > last:
                    break
                pending = next(lines, None)
            out.write(buf)
    if pending is not None:
        # Lines past the end of the media were planned with no room, so none can be left.
        raise AssertionError(f"a line starting at frame {pending[0]} is past the media end")
