"""Stage mix: the dub track, lines at their source times over the ducked original mix.

Inputs are ``source.wav`` (the original mix, any rate and layout, possibly hours long) and
the synthesize stage's ``tts/`` folder (``lines.json`` plus one wav per line). Output is
``dub.wav`` (``mix.sample_rate``, ``mix.channels``, 24-bit, at ``mix.target_lufs``) and
``fit.json`` (per-line timing decisions and loudness figures, read by the QA report).

How, and why this way:

1. :func:`fit.plan` decides per line: as is, borrow silence, speed up, trim. Only lines
   that need it go through ffmpeg (``rubberband``, pitch kept, cached per line).
2. Python writes a *control track* at the voices' own rate (ffmpeg resamples it to
   ``mix.sample_rate`` inside the graph; a line from a voice with another rate is
   resampled in-process): channel 0 is the voice (each line at
   ``round(start * rate)``, never concatenated, so nothing drifts over a film), channel 1
   is the bed's gain envelope (1.0, or ``-duck_db`` with short ramps while a line plays);
   with ``band_duck_db``, a channel that takes the bed's speech band further down under
   lines (what separation leaves of the original voices sits there).
   It is written in 10-second blocks with at most one prepared line in memory, so memory
   does not grow with the film's length.
3. One ffmpeg graph does the rest while streaming: the source is resampled and downmixed
   to the dub layout, multiplied by the envelope and the voice is added. Pass 1 measures
   it (EBU R128), pass 2 writes it with the one gain that reaches the target, or, when
   that gain would push the true peak past the ceiling, through a peak limiter, written
   once more with the gain corrected if it misses the target (see
   :func:`render_normalised`).

Ducking follows the line timings instead of a sidechain compressor: the depth is exactly
``duck_db`` whatever the voice's level, the bed does not pump back up in the pauses between
words, and the envelope is a file, so thousands of lines need no filter expression (an
argument longer than 128 KiB cannot even be passed to a process on Linux).
"""

import bisect
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from dubflow import config_schema, fit, records
from dubflow.atomic import atomic_path, write_json
from dubflow.errors import InputError
from dubflow.ffmpeg_needs import codec, filter_, muxer
from dubflow.ffmpeg_safe import file_arg, probe, require_audio, run_ffmpeg

STAGE = "mix"
log = logging.getLogger(__name__)

#: How far the bed is ducked under a line with duck_db: auto. Spleeter leaves the original
#: speech 12 dB down in the bed where music is as loud as the speech, 21 dB where it is
#: 10 dB under (the per-cell measure of tests/test_separation), so a light 10 dB dip keeps
#: the music 2 dB fuller than the 12 dB the unseparated mix needs; the band duck below
#: does the rest.
AUTO_DUCK_DB = {"spleeter": 10.0, "dtln": 10.0, "none": 12.0}
#: mix.band_duck_db: auto. What Spleeter leaves of the original speech sits almost all in
#: 150-2400 Hz (fundamentals and first formants sharing cells with chords and bass: 97 % of
#: the leak, measured per band in tests/test_separation), where the dub voice is too. A
#: further 10 dB dip there under a line takes the original voices 30 dB or more under the
#: dub (30.4 dB at equal level, 39.8 with the music 10 dB under the speech; the broadband
#: duck alone: 21.3 and 30.3) while the music's lows and highs stay at the light duck.
AUTO_BAND_DUCK_DB = {"spleeter": 10.0, "dtln": 10.0, "none": 0.0}
#: The speech band as a zero-phase FIR (ffmpeg's firequalizer, gains in dB by frequency):
#: flat 150-2400 Hz with shoulders down to 100 and up to 3500 Hz. Its delay is a whole
#: number of samples (BAND_FIR_S at the dub's rate), taken back out so that the band lines
#: up with the bed sample for sample: the band is subtracted from the bed, not added.
SPEECH_BAND = ((0, -100), (100, -100), (150, 0), (2400, 0), (3500, -100))  # (Hz, dB)
BAND_FIR_S = 0.01
#: mix.loudness: (integrated LUFS, true-peak ceiling dBTP) of the common delivery specs.
LOUDNESS_PRESETS = {"streaming": (-16.0, -1.0), "ebu-r128": (-23.0, -1.0),
                    "atsc-a85": (-24.0, -2.0)}
#: A pause between words: this long and this far below the line's peak. A line that must
#: be cut is cut in the last such pause that fits, so no word is cut in half.
PAUSE_MIN_S = 0.04
PAUSE_FLOOR_DB = -30.0
#: Silence kept between a line that borrows time and the next line.
GAP_S = 0.05
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
#: Dub layouts: ffmpeg's name and how the mono voice is placed (centre for 5.1 and 7.1).
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}
VOICE_PAN = {1: "mono|c0=c0", 2: "stereo|c0=c0|c1=c0", 6: "5.1|FC=c0", 8: "7.1|FC=c0"}
#: Peaks are held this far under ``true_peak_db``: a limiter working at 192 kHz moves
#: them by a few hundredths of a dB when the dub is resampled to its own rate.
TP_MARGIN_DB = 0.2
#: The limiter first works at the dub's own rate, where it sees sample peaks only, so it
#: holds them this much lower again; the pass meters the true peak (4x oversampled) of
#: what it wrote, and only a file over the ceiling is redone at TRUE_PEAK_RATE. On speech
#: the 48 kHz passes are 2.7 times faster than at 192 kHz (1.9 s against 5.3 s for 10
#: minutes), and true peaks landed 0.1-0.4 dB above the sample peaks.
SAMPLE_PEAK_MARGIN_DB = 0.5
TRUE_PEAK_RATE = 192000
#: AAC bit rate of the mkv's dub track by channel count.
DUB_BITRATE = {1: "96k", 2: "192k", 6: "384k", 8: "512k"}
#: A limited dub this close to the target is kept; further off, it is written once more
#: with the gain corrected (EBU R128 allows 0.5 LU around a file's target).
LOUDNESS_TOLERANCE_LU = 0.2
#: The look-ahead peak limiter (see render_normalised): fast enough to catch a plosive,
#: slow enough to release without distortion.
LIMITER_ATTACK_MS = 2.0
LIMITER_RELEASE_MS = 80.0
#: The meter at the end of every ffmpeg pass (framelog=verbose: the ten lines a second go
#: to a log level the runner does not print; only the summary is read).
METER = filter_("ebur128", peak="true", framelog="verbose")
#: The first pass only decides between one gain and the limiter, so it reads sample peaks
#: (0.6 s against 1.5 s for 10 minutes): they are never above the true peak, so "over"
#: is certain, and a "not over" is checked on the written file's true peak.
SAMPLE_METER = filter_("ebur128", peak="sample", framelog="verbose")
#: Integrated loudness at or below the EBU R128 absolute gate: nothing to normalise.
SILENCE_LUFS = -70.0
#: Envelope and voice stay float so a loud voice over a loud bed cannot clip before it is
#: normalised.
CONTROL_SUBTYPE = "FLOAT"


@dataclass(frozen=True)
class MixSettings:
    """The ``mix:`` section resolved: presets and ``auto`` values replaced by numbers."""

    target_lufs: float
    true_peak_db: float
    max_speedup: float
    sample_rate: int
    channels: int
    duck_db: float
    band_duck_db: float
    fade_ms: float
    max_lead_s: float
    restore_dialogue: bool  # only over a separated bed: the original mix has its dialogue


def settings(mix: dict | None, source_channels: int | None = None) -> MixSettings:
    """The ``mix:`` section (defaults and ranges from the schema) as numbers.

    ``channels: auto`` gives the dub the source's layout (``source_channels``): mono,
    stereo, 5.1 or 7.1; any other layout (or an unknown one) gets stereo."""
    mix = config_schema.section("mix", mix)
    preset_lufs, preset_tp = LOUDNESS_PRESETS[mix["loudness"]]
    channels = mix["channels"]
    if channels == "auto":
        channels = source_channels if source_channels in LAYOUTS else 2
    duck_db, band_duck_db = mix["duck_db"], mix["band_duck_db"]
    return MixSettings(
        target_lufs=float(preset_lufs if mix["target_lufs"] is None else mix["target_lufs"]),
        true_peak_db=float(preset_tp if mix["true_peak_db"] is None else mix["true_peak_db"]),
        max_speedup=float(mix["max_speedup"]),
        sample_rate=mix["sample_rate"],
        channels=channels,
        duck_db=float(AUTO_DUCK_DB[mix["separation"]] if duck_db == "auto" else duck_db),
        band_duck_db=float(AUTO_BAND_DUCK_DB[mix["separation"]] if band_duck_db == "auto"
                           else band_duck_db),
        fade_ms=float(mix["fade_ms"]),
        max_lead_s=float(mix["max_lead_s"]),
        restore_dialogue=mix["restore_dialogue"] and mix["separation"] != "none",
    )


# --------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------


def read_lines(tts_dir: str | Path) -> list[dict]:
    """lines.json of the synthesize stage, with each wav's real length as ``duration_s``.

    Every wav is opened (header only) before any audio is processed, so a missing or
    damaged file stops the stage in seconds rather than after an hour of mixing.
    """
    tts_dir = Path(tts_dir)
    index = tts_dir / "lines.json"
    lines = [row.to_dict() for row in records.read_tts_lines(index, STAGE)]
    for line in lines:
        if line["start"] < 0:
            raise InputError(
                f"line {line['id']} of {index} starts at {line['start']} s, before the video "
                f"(stage {STAGE}); re-run the synthesize stage for this video and language "
                "to write it again."
            )
    checked = []
    for line in lines:
        if line.get("wav"):
            line = {**line, "duration_s": _wav_duration(tts_dir, line)}
        checked.append(line)
    return checked


def _wav_duration(tts_dir: Path, line: dict) -> float:
    name = str(line["wav"])
    path = tts_dir / name
    try:
        if Path(name).name != name:
            raise ValueError("the name must be a plain file name inside the tts folder")
        info = sf.info(str(path))
        if info.frames <= 0:
            raise ValueError("it holds no audio")
    except (OSError, ValueError, RuntimeError, sf.LibsndfileError) as error:
        raise _bad_wav(path, line, error) from None
    return info.frames / info.samplerate


def _bad_wav(path: Path, line: dict, error: Exception) -> InputError:
    problem = "does not exist" if not path.exists() else f"is not a readable WAV ({_reason(error)})"
    return InputError(
        f"{path} (line {line.get('id')}) {problem} (stage {STAGE}); re-run the synthesize "
        "stage for this video and language to write it again."
    )


def _reason(error: Exception) -> str:
    """The short cause of an error, without the path the sentence already names."""
    text = (getattr(error, "error_string", None) or getattr(error, "strerror", None)
            or str(error) or type(error).__name__)
    return text.splitlines()[0].rstrip(".").lower()


def line_audio(
    placement: fit.Placement, wav: Path, cfg: MixSettings, workdir: Path,
    ffmpeg: dict | None, tempo_cache: Path | None = None, control_rate: int | None = None,
    cuts: dict | None = None,
) -> np.ndarray:
    """One line as mono float32 at the control track's rate: sped up, resampled, cut to
    its room."""
    control_rate = control_rate or cfg.sample_rate
    source = wav
    if placement.speed > 1.0:
        source = sped_up(wav, placement, workdir, ffmpeg, tempo_cache)
    try:
        audio, rate = sf.read(str(source), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as error:
        raise _bad_wav(wav, {"id": placement.id}, error) from None
    finally:
        if source.parent == workdir:
            source.unlink(missing_ok=True)
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    mono = resample(mono, rate, control_rate)
    room = room_frames(placement, control_rate)
    if len(mono) > room:
        cut = last_pause(mono, room, control_rate)
        if cuts is not None:
            cuts[placement.id] = {"kept_s": round(cut / control_rate, 3),
                                  "at_pause": cut < room,
                                  "dropped_share": round(speech_share_after(mono, cut,
                                                                            control_rate), 3)}
        mono = fade_out(mono[:cut], int(cfg.fade_ms / 1000 * control_rate))
    return np.ascontiguousarray(mono, dtype=np.float32)


def _frame_levels(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """RMS in dB below the line's peak, per 10 ms frame."""
    hop = max(1, rate // 100)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop).astype(np.float64)
    rms = np.sqrt((frames ** 2).mean(axis=1)) + 1e-9
    return 20 * np.log10(rms / (rms.max() if len(rms) else 1.0)), hop


def last_pause(audio: np.ndarray, room: int, rate: int) -> int:
    """Where to cut a line that needs more than ``room`` frames: the middle of the last
    pause between words that ends inside the room, so the line ends on a whole word;
    ``room`` itself when the line has no such pause (one long word: flagged by the caller)."""
    levels, hop = _frame_levels(audio, rate)
    quiet = levels < PAUSE_FLOOR_DB
    need = max(1, round(PAUSE_MIN_S * rate / hop))
    last_frame = min(room // hop, len(quiet))
    best, run = None, 0
    for i in range(last_frame):
        run = run + 1 if quiet[i] else 0
        if run >= need and np.any(~quiet[: i - run + 1]):  # speech before it: between words
            best = (i - run // 2) * hop
    return min(best, room) if best else room


def speech_share_after(audio: np.ndarray, cut: int, rate: int) -> float:
    """Share of the line's voiced frames after ``cut``: how much of it the viewer loses."""
    levels, hop = _frame_levels(audio, rate)
    voiced = levels >= PAUSE_FLOOR_DB
    total = int(voiced.sum())
    return float(voiced[cut // hop:].sum()) / total if total else 0.0


def sped_up(wav: Path, placement: fit.Placement, workdir: Path, ffmpeg: dict | None,
            tempo_cache: Path | None) -> Path:
    """The line at ``placement.speed``, from the cache when this audio was sped up before.

    One ffmpeg call per sped-up line took 6 of the 20 s of a 10-minute mix; after an edit
    every other line is unchanged, so the cache (keyed by the audio's bytes and the exact
    filter) turns that into file reads.
    """
    tempo = _tempo_filter(placement.speed, ffmpeg)
    cached = None
    if tempo_cache is not None:
        digest = hashlib.sha256(wav.read_bytes() + tempo.encode()).hexdigest()
        cached = tempo_cache / digest[:2] / f"{digest}.wav"
        if cached.is_file():
            return cached
    dest = cached or workdir / "tempo.wav"  # lines are prepared one at a time
    with atomic_path(dest) as tmp:
        run_ffmpeg(
            ["-i", file_arg(wav), "-af", tempo, *codec("pcm_f32le"), file_arg(tmp)],
            stage=STAGE, path=wav, config=ffmpeg, media_duration_s=placement.natural_s,
        )
    return dest


#: Whether each configured ffmpeg has rubberband (asked once per process and binary).
_RUBBERBAND: dict[str, bool] = {}


def _tempo_filter(speed: float, ffmpeg: dict | None) -> str:
    """rubberband (pitch kept, exact length); atempo where an ffmpeg build lacks it.

    The pip-installed static ffmpeg has rubberband; a conda or distribution build may
    not, and a dub with slightly plainer speed-ups beats a failed run.
    """
    binary = str((ffmpeg or {}).get("ffmpeg") or "auto")
    if binary not in _RUBBERBAND:
        result = run_ffmpeg(["-h", "filter=rubberband"], stage=STAGE, path=None, config=ffmpeg)
        _RUBBERBAND[binary] = "rubberband AVOptions" in result.stdout
        if not _RUBBERBAND[binary]:
            log.warning("this ffmpeg (%s) has no rubberband filter; lines are sped up with "
                        "atempo instead", binary)
    return filter_("rubberband" if _RUBBERBAND[binary] else "atempo", tempo=f"{speed:.6f}")


def voice_rate(lines: list[dict], cfg: MixSettings) -> int:
    """The control track's rate: that of most lines, so most need no resampling here.

    Resampling every line in Python (and importing scipy.signal, 0.7 s) was a tenth of
    the stage; ffmpeg's resampler does the whole track in the graph for less.
    """
    rates = collections.Counter(int(line["sample_rate"]) for line in lines
                                if line.get("sample_rate"))
    return rates.most_common(1)[0][0] if rates else cfg.sample_rate


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling by the exact rational ratio (22050 -> 48000 is 320/147)."""
    if rate == target or len(audio) == 0:
        return audio
    from scipy.signal import resample_poly  # only lines at an odd rate get here

    g = math.gcd(rate, target)
    return resample_poly(audio, target // g, rate // g).astype(np.float32)


def room_frames(placement: fit.Placement, rate: int) -> int:
    """Frames a line may fill: up to where the plan's available time ends, in samples.

    Computed from the two rounded sample positions (not from the length alone), so a line
    never reaches the sample where the next one starts, whatever the rounding.
    """
    start = round(placement.start * rate)
    return max(0, round((placement.start + placement.available_s) * rate) - start)


def fade_out(audio: np.ndarray, frames: int) -> np.ndarray:
    """Linear fade over the last ``frames`` samples, so a cut line does not click."""
    frames = min(frames, len(audio))
    if frames > 0:
        audio = audio.copy()
        audio[-frames:] *= np.linspace(1.0, 0.0, frames, dtype=np.float32)
    return audio


# --------------------------------------------------------------------------------------
# Control track: voice + ducking envelope
# --------------------------------------------------------------------------------------


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
                buf[:, column["band"]] = buf[:, 1] * (ducked_gain(depth, band_duck_db) - 1.0)
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


# --------------------------------------------------------------------------------------
# ffmpeg: bed, ducking, sum, loudness
# --------------------------------------------------------------------------------------


def control_channels(band: bool, restore: bool) -> tuple[str, ...]:
    """The control track's channels in order: the voice, the bed's gain, the gain added to
    the bed's speech band (with a band duck), the original mix's gain (with restored spans)."""
    return ("voice", "gain") + (("band",) if band else ()) + (("original",) if restore else ())


def speech_band(rate: int) -> str:
    """The bed's speech band (SPEECH_BAND), sample-aligned with the bed: the FIR delays it
    by exactly ``delay`` samples, so it is fed that much silence more and its head dropped."""
    delay = round(BAND_FIR_S * rate)
    return ",".join([filter_("apad", pad_len=delay),
                     filter_("firequalizer", delay=repr(delay / rate),
                                     gain_entry="'" + ";".join(
                                         f"entry({hz},{db})" for hz, db in SPEECH_BAND) + "'"),
                     filter_("atrim", start_sample=delay), filter_("asetpts", "PTS-STARTPTS")])


def speech_band_of(audio: np.ndarray, rate: int) -> np.ndarray:
    """The speech band of a short mono stretch, as :func:`speech_band` gives it to the mix
    (a linear-phase FIR from the same table, centred: zero phase), for the review preview."""
    from scipy.signal import fftconvolve, firwin2  # 1 s to import: not for the stage itself

    grid = np.linspace(0.0, rate / 2, 1025)  # firequalizer interpolates in dB
    gains = 10 ** (np.interp(grid, *zip(*SPEECH_BAND)) / 20)
    taps = firwin2(2 * round(BAND_FIR_S * rate) + 1, grid, gains, fs=rate)
    return fftconvolve(audio, taps, mode="same").astype(np.float32)


def mix_graph(cfg: MixSettings, with_voice: bool, tail: str, restore: bool = False) -> str:
    """The filter graph from the inputs; ``tail`` is the loudness step and the output
    label(s), e.g. ``volume=2dB[out]``.

    Built only from numbers and fixed names. Each gain channel of the control track is
    panned explicitly to every channel: ffmpeg's automatic mono-to-stereo conversion would
    scale it by -3 dB. With ``restore``, input 2 is the original mix and the control
    track's last channel its gain. With a band duck the bed's speech band, times its gain
    channel, is added: the bed then dips further in that band under lines.
    """
    layout = LAYOUTS[cfg.channels]
    form = filter_("aformat", sample_fmts="flt", sample_rates=cfg.sample_rate,
                   channel_layouts=layout)
    bed = "[0:a]" + form
    if not with_voice:
        return f"{bed},{tail}"
    names = control_channels(cfg.band_duck_db > 0, restore)
    graph = ["[1:a]" + filter_("aresample", cfg.sample_rate) + ","
             + filter_("asplit", len(names)) + "".join(f"[c_{name}]" for name in names),
             "[c_voice]" + filter_("pan", VOICE_PAN[cfg.channels]) + "[voices]"]
    for index, name in enumerate(names[1:], start=1):
        graph.append(f"[c_{name}]" + filter_("pan", f"{layout}|" + "|".join(
            f"c{i}=c{index}" for i in range(cfg.channels))) + f"[{name}s]")
    summed = ["[ducked]", "[voices]"]
    if "band" in names:
        graph += [f"{bed},{filter_('asplit', 2)}[bed][bandin]",
                  f"[bandin]{speech_band(cfg.sample_rate)}[band]",
                  "[band][bands]" + filter_("amultiply") + "[banddip]"]
        summed.insert(1, "[banddip]")
    else:
        graph.append(f"{bed}[bed]")
    graph.append("[bed][gains]" + filter_("amultiply") + "[ducked]")
    if restore:
        graph += [f"[2:a]{form}[original]",
                  "[original][originals]" + filter_("amultiply") + "[restored]"]
        summed.insert(1, "[restored]")
    graph.append("".join(summed) + filter_("amix", inputs=len(summed), normalize=0,
                                            duration="first") + f",{tail}")
    return ";".join(graph)


def limiter_filter(cfg: MixSettings, gain_db: float, rate: int) -> str:
    """Gain, then a look-ahead peak limiter working at ``rate`` (the dub's own rate, or
    TRUE_PEAK_RATE: 4x oversampled, as true peak is defined)."""
    margin = 0.0 if rate >= TRUE_PEAK_RATE else SAMPLE_PEAK_MARGIN_DB
    limit = 10 ** ((_peak_target(cfg) - margin) / 20)
    chain = (gain_filter(gain_db) + ","
             + filter_("alimiter", limit=f"{limit:.6f}", attack=LIMITER_ATTACK_MS,
                       release=LIMITER_RELEASE_MS, level=0, latency=1))
    if rate == cfg.sample_rate:
        return chain
    return f"{filter_('aresample', rate)},{chain},{filter_('aresample', cfg.sample_rate)}"


def gain_filter(gain_db: float) -> str:
    return filter_("volume", f"{gain_db:.3f}dB")


def dub_codec(cfg: MixSettings) -> list[str]:
    """The mkv's dub track: AAC with ffmpeg's fast coder, 2.5 times faster than its default
    two-loop search (6.3 s against 16.1 s for 10 minutes of stereo, measured); at 96 kb/s
    a channel the two are not told apart on speech over a ducked bed."""
    return [*codec("aac", aac_coder="fast"), "-b:a", DUB_BITRATE[cfg.channels]]


def ffmpeg_pass(source_wav: Path, control: Path | None, cfg: MixSettings, tail: str,
                dest: Path | None, duration_s: float, ffmpeg: dict | None,
                threads: int, encoded: Path | None = None, meter: str = METER,
                original: Path | None = None) -> str:
    """One streaming pass over the whole mix, measured by ``ebur128`` at its end.

    Writes ``dest`` (24-bit WAV, RF64 past 4 GB) and ``encoded`` (the same audio as the
    mkv's AAC track) or, without them, only measures; returns ffmpeg's log, where the
    meters print their figures. The encoder runs in its own ffmpeg thread beside the
    filters, so the mkv track costs this pass 3 s for 10 minutes instead of a second
    decode and encode of 6 s in mux. ``original``: the original mix, for restored spans.
    """
    args = ["-i", file_arg(source_wav)]
    if control is not None:
        args += ["-i", file_arg(control)]
        if original is not None:
            args += ["-i", file_arg(original)]
    split = f",{filter_('asplit', 2)}[out][enc]" if encoded is not None else "[out]"
    graph = mix_graph(cfg, control is not None, f"{tail},{meter}{split}",
                      restore=control is not None and original is not None)
    args += ["-filter_complex_threads", str(threads), "-filter_complex", graph,
             "-map", "[out]"]
    if dest is None:
        args += [*muxer("null"), file_arg(os.devnull)]
    else:
        args += ["-ar", str(cfg.sample_rate), *codec("pcm_s24le"), *muxer("wav", rf64="auto"),
                 file_arg(dest)]
    if encoded is not None:
        args += ["-map", "[enc]", "-ar", str(cfg.sample_rate), *dub_codec(cfg),
                 *muxer("matroska"), file_arg(encoded)]
    result = run_ffmpeg(args, stage=STAGE, path=source_wav, config=ffmpeg,
                        media_duration_s=duration_s)
    return result.stderr


def render_normalised(source_wav: Path, control: Path | None, dest: Path, cfg: MixSettings,
                      duration_s: float, ffmpeg: dict | None, threads: int,
                      encoded: Path | None = None, original: Path | None = None,
                      prior: dict | None = None) -> dict:
    """Write dub.wav at the target loudness under the true-peak ceiling; return the figures.

    Pass 1 measures (ffmpeg's ``ebur128`` meter: the BS.1770 figures loudnorm's own
    measuring pass prints, about 15 times faster). If one constant gain reaches the target
    with the peaks under the ceiling, pass 2 applies it: the textbook two-pass EBU R128,
    with a plain ``volume`` (loudnorm's linear mode is the same gain, computed at 192 kHz
    for nothing). Pass 1 reads sample peaks (SAMPLE_METER), so the written file's true
    peak is checked, and a file over the ceiling goes to the limiter.

    Otherwise one gain would pass the ceiling, and a dynamic normaliser (loudnorm's other
    mode) would ride the gain on running measurements: the first minutes of a film drift
    in level and the ducked bed is lifted between lines. Instead, a look-ahead limiter
    after the gain takes off just the peaks. That costs some loudness (about 1 LU for 8 dB
    of limiting): when the written file misses the target by more than
    LOUDNESS_TOLERANCE_LU, the gain is raised by what it missed and the file written
    again (typically within 0.3 LU then). The limiter works at the dub's rate with a
    margin for true peaks, and again at 192 kHz only if the written file's true peak is
    over the ceiling anyway.

    The last pass meters what it writes, so fit.json reports the file itself.

    ``prior``: this video's last gain decision (:func:`reuse_gain`), tried first.
    """
    def render(tail: str, write: bool, meter: str = METER) -> dict:
        return render_measured(tail, write, meter)[-1]

    def render_measured(tail: str, write: bool, meter: str = METER) -> list[dict]:
        with contextlib.ExitStack() as files:
            tmp = files.enter_context(atomic_path(dest)) if write else None
            track = files.enter_context(atomic_path(encoded)) if write and encoded else None
            return ebur128_summaries(ffmpeg_pass(source_wav, control, cfg, tail, tmp,
                                                 duration_s, ffmpeg, threads, track, meter,
                                                 original))

    if prior is not None:
        reused = reuse_gain(prior, cfg, render_measured)
        if reused is not None:
            return reused
    measured = render(filter_("anull"), write=False, meter=SAMPLE_METER)
    figures = {"input_i": measured["i"], "input_peak": measured["tp"],
               "input_lra": measured["lra"]}
    if measured["i"] <= SILENCE_LUFS or not math.isfinite(measured["tp"]):
        log.warning("the mix for %s is silent (integrated loudness %s LUFS), so it is "
                    "written without loudness normalisation", dest, measured["i"])
        render(filter_("anull"), write=True)
        return {"input_i": None, "input_peak": None, "input_lra": None,
                "output_i": None, "output_tp": None, "normalization": "skipped",
                "gain_db": 0.0, "limited_db": 0.0}
    gain = cfg.target_lufs - measured["i"]
    # ebur128 prints tenths of a dB; rounding keeps float noise from choosing the limiter
    over = round(measured["tp"] + gain - _peak_target(cfg), 2)
    if over <= 0:
        output = render(gain_filter(gain), write=True)
        if output["tp"] <= cfg.true_peak_db:
            return {**figures, "output_i": output["i"], "output_tp": output["tp"],
                    "normalization": "linear", "gain_db": gain, "limited_db": 0.0}
        over = output["tp"] - _peak_target(cfg)
        log.info("at %+.1f dB gain the true peak is %.1f dBTP, over the %.1f ceiling",
                 gain, output["tp"], cfg.true_peak_db)
    log.info("at %+.1f dB gain the peaks would pass the ceiling by %.1f dB; limiting them",
             gain, over)
    for rate in (cfg.sample_rate, TRUE_PEAK_RATE):
        final_gain = gain
        output = render(limiter_filter(cfg, final_gain, rate), write=True)
        if abs(cfg.target_lufs - output["i"]) > LOUDNESS_TOLERANCE_LU:
            final_gain += cfg.target_lufs - output["i"]
            output = render(limiter_filter(cfg, final_gain, rate), write=True)
        if output["tp"] <= cfg.true_peak_db:
            break
        log.info("limited at %d Hz, the true peak is %.1f dBTP, over the %.1f ceiling; "
                 "limiting again at %d Hz", rate, output["tp"], cfg.true_peak_db,
                 TRUE_PEAK_RATE)
    return {**figures, "output_i": output["i"], "output_tp": output["tp"],
            "normalization": "limited", "gain_db": final_gain,
            "limited_db": over + final_gain - gain, "limiter_rate": rate}


def reuse_gain(prior: dict, cfg: MixSettings, render_measured) -> dict | None:
    """Write the dub once with the gain (and limiter) of this video's previous mix, metering
    the mix before and after it in the same pass; None, having written nothing that
    stays, when that is not what :func:`render_normalised` would decide now.

    After a one-line edit the mix's loudness barely moves, so the measuring pass (a
    fifth of the stage) is skipped, and the rest of the track keeps the level it had
    instead of moving by a rounding step. The gain is kept only when measuring would
    take the same path (one gain, or the limiter) and the file written meets the target
    within LOUDNESS_TOLERANCE_LU and the true-peak ceiling: the same promise as measuring.
    """
    gain, limited = float(prior["gain_db"]), prior["normalization"] == "limited"
    tail = (limiter_filter(cfg, gain, int(prior["limiter_rate"])) if limited
            else gain_filter(gain))
    before = (filter_("asplit", 2) + "[pre][post];[pre]" + SAMPLE_METER + ","
              + filter_("anullsink") + ";[post]" + tail)
    measured, output = render_measured(before, write=True)
    needed = cfg.target_lufs - measured["i"]
    would_limit = round(measured["tp"] + needed - _peak_target(cfg), 2) > 0
    if (measured["i"] <= SILENCE_LUFS or would_limit != limited
            or abs(cfg.target_lufs - output["i"]) > LOUDNESS_TOLERANCE_LU
            or output["tp"] > cfg.true_peak_db):
        log.info("the previous mix's gain (%+.1f dB, %s) does not fit this one "
                 "(%.1f LUFS, %.1f dBTP written); measuring again", gain,
                 prior["normalization"], output["i"], output["tp"])
        return None
    log.info("reused the previous mix's gain (%+.1f dB, %s): %.1f LUFS, %.1f dBTP", gain,
             prior["normalization"], output["i"], output["tp"])
    return {"input_i": measured["i"], "input_peak": measured["tp"],
            "input_lra": measured["lra"], "output_i": output["i"], "output_tp": output["tp"],
            "normalization": prior["normalization"], "gain_db": gain,
            "limited_db": (max(0.0, measured["tp"] + gain - _peak_target(cfg)) if limited
                           else 0.0),
            **({"limiter_rate": int(prior["limiter_rate"])} if limited else {})}


def read_gain_memo(path: Path | None, cfg: MixSettings, duration_s: float) -> dict | None:
    """The previous mix's gain decision for the same settings and length, or None."""
    if path is None or not path.is_file():
        return None
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
        if (memo.get("settings") == dataclasses.asdict(cfg)
                and memo.get("duration_s") == round(duration_s, 3)
                and memo.get("normalization") in ("linear", "limited")):
            float(memo["gain_db"])
            return memo
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.info("%s cannot be read; measuring the mix's loudness", path)
    return None


def write_gain_memo(path: Path | None, cfg: MixSettings, duration_s: float,
                    loudness: dict) -> None:
    """Remember the gain decision for the next mix of this video (a cache: failing to
    write it only costs the next run a measuring pass)."""
    if path is None or loudness.get("normalization") not in ("linear", "limited"):
        return
    memo = {"settings": dataclasses.asdict(cfg), "duration_s": round(duration_s, 3),
            **{key: loudness[key] for key in ("normalization", "gain_db", "limiter_rate")
               if key in loudness}}
    with contextlib.suppress(OSError):
        write_json(path, memo)


def ebur128_summary(stderr: str) -> dict:
    """The figures of the graph's last meter (the one on what is written)."""
    return ebur128_summaries(stderr)[-1]


def ebur128_summaries(stderr: str) -> list[dict]:
    """Each ebur128 meter's summary, in graph order: integrated loudness, its gate,
    loudness range and peak. ffmpeg names each ``Parsed_ebur128_<n>`` in graph order and
    prints them in another order (some builds twice, the first time for a graph they
    configure and drop): the last summary of each name counts.

    ``-inf`` peak and -70 LUFS (the absolute gate) mean digital silence.
    """
    heads = list(re.finditer(r"\[Parsed_ebur128_(\d+) @ [^\]]*\] Summary:", stderr))
    if not heads:
        return [_summary_figures(stderr[stderr.rindex("Summary:"):])]
    last = {}
    for head, after in zip(heads, heads[1:] + [None]):
        last[int(head.group(1))] = stderr[head.end():after.start() if after else None]
    return [_summary_figures(last[index]) for index in sorted(last)]


def _summary_figures(summary: str) -> dict:
    number = r"(-?(?:inf|[0-9.]+))"
    found = {
        "i": re.search(rf"I:\s+{number} LUFS", summary),
        "thresh": re.search(rf"Threshold:\s+{number} LUFS", summary),
        "lra": re.search(rf"LRA:\s+{number} LU\b", summary),
        "tp": re.search(rf"Peak:\s+{number} dBFS", summary),
    }
    missing = [key for key, match in found.items() if match is None]
    if missing:
        raise AssertionError(f"ebur128 printed no {missing} in its summary:\n{summary}")
    return {key: float(match.group(1)) for key, match in found.items()}


def _peak_target(cfg: MixSettings) -> float:
    return max(-9.0, cfg.true_peak_db - TP_MARGIN_DB)


def _rounded(value: object) -> float | None:
    """JSON has no -inf: unmeasurable loudness is written as null."""
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 2)
    return None


def run_every_graph(workdir: Path, mix: dict | None, ffmpeg: dict | None) -> list[str]:
    """Run each kind of ffmpeg pass this stage can make on a second of audio: measuring,
    one gain, the limiter at the dub's rate and at 192 kHz (writing the mkv track too), a
    reused gain metered before and after, the original mix restored over the bed, and the
    tempo change. ``make verify`` calls it, so
    a binary that lists every option but still cannot run a graph is caught before a
    season is queued on it."""
    cfg = settings(mix)
    rate = 48000
    t = np.arange(rate, dtype=np.float32) / rate
    source, control, line = workdir / "source.wav", workdir / "control.wav", workdir / "line.wav"
    sf.write(source, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1), rate)
    voice = 0.5 * np.sin(2 * np.pi * 330 * t)
    levels = {"voice": voice, "gain": 0.25, "band": -0.2, "original": 0.75}

    def write_control_of(path: Path, restore: bool) -> Path:
        names = control_channels(cfg.band_duck_db > 0, restore)
        sf.write(path, np.stack([np.broadcast_to(levels[name], voice.shape) for name in names],
                                axis=1), rate, subtype=CONTROL_SUBTYPE)
        return path

    write_control_of(control, restore=False)
    sf.write(line, voice, rate)
    ran = []
    for name, tail, meter in (
        ("measure", filter_("anull"), SAMPLE_METER),
        ("gain", gain_filter(-3.0), METER),
        (f"limiter at {cfg.sample_rate} Hz", limiter_filter(cfg, 6.0, cfg.sample_rate), METER),
        (f"limiter at {TRUE_PEAK_RATE} Hz", limiter_filter(cfg, 6.0, TRUE_PEAK_RATE), METER),
    ):
        stderr = ffmpeg_pass(source, control, cfg, tail, workdir / "dub.wav", 1.0, ffmpeg, 1,
                             workdir / "dub.mka", meter)
        ebur128_summary(stderr)
        ran.append(name)
    reuse = (filter_("asplit", 2) + "[pre][post];[pre]" + SAMPLE_METER + ","
             + filter_("anullsink") + ";[post]" + gain_filter(-3.0))  # as reuse_gain meters
    if len(ebur128_summaries(ffmpeg_pass(source, control, cfg, reuse, workdir / "dub.wav", 1.0,
                                         ffmpeg, 1, workdir / "dub.mka"))) != 2:
        raise AssertionError("ffmpeg printed one loudness summary for two meters")
    ran.append("reused gain")
    restore = write_control_of(workdir / "restore.wav", restore=True)
    ebur128_summary(ffmpeg_pass(source, restore, cfg, filter_("anull"), workdir / "dub.wav",
                                1.0, ffmpeg, 1, meter=SAMPLE_METER, original=source))
    ran.append("restore")
    placement = fit.Placement(id="0001", start=0.0, slot_s=0.8, available_s=0.8, natural_s=1.0,
                              borrowed_s=0.0, speed=1.25, trimmed_s=0.0)
    sped_up(line, placement, workdir, ffmpeg, None)
    ran.append(_tempo_filter(1.25, ffmpeg).split("=")[0])
    return ran


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------


def run(source_wav: str | Path, tts_dir: str | Path, dub_wav: str | Path,
        fit_json: str | Path, mix: dict, ffmpeg: dict | None = None,
        threads: int = 1, tempo_cache: str | Path | None = None,
        dub_track: str | Path | None = None, original_wav: str | Path | None = None,
        gain_memo: str | Path | None = None) -> dict:
    """Write dub.wav, fit.json and (if asked) ``dub_track``, the same audio encoded for
    the mkv (Matroska audio, AAC); return the fit.json content.

    ``source_wav`` is what the dub goes over (the separated bed, or the original mix);
    ``original_wav`` the original mix, played again where a line is not voiced when
    mix.restore_dialogue is on. ``tempo_cache``: a folder for sped-up lines
    (``<tts.cache_dir>/tempo``), or None. ``gain_memo``: where this video's last gain
    decision is kept (``<mix.cache_dir>/gain/<name>.<lang>.json``), or None.
    """
    source_wav, tts_dir, dub_wav = Path(source_wav), Path(tts_dir), Path(dub_wav)
    threads = max(1, int(threads or 1))
    info = probe(source_wav, stage=STAGE, config=ffmpeg)
    cfg = settings(mix, require_audio(info, STAGE).channels)
    log.info("dub: %d channel(s), %s LUFS, %s dBTP", cfg.channels, cfg.target_lufs,
             cfg.true_peak_db)
    if not info.duration_s:
        raise InputError(
            f"{source_wav} has no measurable duration (stage {STAGE}); delete it and "
            "re-run so the extract stage writes it again."
        )
    duration = info.duration_s
    lines = read_lines(tts_dir)
    placements = fit.plan(lines, cfg.max_speedup, duration, GAP_S, cfg.max_lead_s)
    cuts: dict[str, dict] = {}
    by_id = {str(line["id"]): line for line in lines}
    log.info("%d lines placed over %.1f s: %s", len(placements), duration,
             fit.summary(placements))
    restored = (restore_spans(lines, placements, duration)
                if cfg.restore_dialogue and original_wav else [])
    if restored:
        log.info("original dialogue restored where no line is voiced: %d span(s), %.1f s",
                 len(restored), sum(b - a for a, b in restored))

    dub_wav.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{dub_wav.stem}.partial-mix-", dir=dub_wav.parent))
    try:
        control = None
        if placements or restored:
            control = workdir / "control.wav"
            rate = voice_rate(lines, cfg)
            frames = math.ceil(duration * rate) + rate
            wavs = {p.id: str(by_id[p.id]["wav"]) for p in placements}
            write_control(control, rate, frames,
                          placed_lines(placements, tts_dir, wavs, cfg, workdir, ffmpeg,
                                       Path(tempo_cache) if tempo_cache else None, rate,
                                       cuts),
                          duck_intervals(placements), cfg.duck_db, restored or None,
                          cfg.band_duck_db)
        else:
            log.warning("%s has no lines to place, so the dub of %s is its original mix, "
                        "normalised", tts_dir / "lines.json", source_wav)
        memo = Path(gain_memo) if gain_memo else None
        loudness = render_normalised(source_wav, control, dub_wav, cfg, duration, ffmpeg,
                                     threads, Path(dub_track) if dub_track else None,
                                     Path(original_wav) if restored else None,
                                     read_gain_memo(memo, cfg, duration))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("loudness: %s", loudness)
    write_gain_memo(memo, cfg, duration, loudness)
    loudness.pop("limiter_rate", None)

    return records.write_fit(fit_json, records.Fit(
        lines=[p.to_row(by_id[p.id], cut_record(cuts[p.id], by_id[p.id].get("text"))
                        if p.id in cuts else None) for p in placements],
        summary=fit.summary(placements),
        restored=[list(span) for span in restored],
        voices=read_voices(tts_dir),
        loudness={**{key: _rounded(value) if isinstance(value, float) else value
                     for key, value in loudness.items()},
                  "target_lufs": cfg.target_lufs, "true_peak_db": cfg.true_peak_db},
    ))


def read_voices(tts_dir: Path) -> dict:
    """Who dubs whom, with both pitches (synthesize's voices.json), for the QA page."""
    path = tts_dir / "voices.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        log.warning("%s is not valid JSON; the QA page will not show the voices", path)
        return {}


def cut_record(cut: dict, text: str | None) -> dict:
    """What the viewer loses of a cut line: its last words, estimated from the share of
    the line's speech after the cut (the engines give no word timings)."""
    words = (text or "").split()
    dropped = min(len(words), round(cut["dropped_share"] * len(words)))
    return {**cut, "dropped_words": " ".join(words[len(words) - dropped:]) if dropped else ""}


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(sm, STAGE, run, source_wav=sm.input.source, tts_dir=sm.input.tts,
             dub_wav=sm.output.dub, fit_json=sm.output.fit, mix=sm.params.mix,
             ffmpeg=sm.params.ffmpeg, threads=sm.threads, tempo_cache=sm.params.tempo_cache,
             dub_track=sm.output.track, original_wav=sm.input.original,
             gain_memo=sm.params.gain_memo)
