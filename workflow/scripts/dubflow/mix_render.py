"""The mix's ffmpeg graph and its loudness: bed, ducking, voice, sum, normalisation.

One ffmpeg graph does the rest of the stage while streaming: the source is resampled and
downmixed to the dub layout, multiplied by the control track's envelope
(:mod:`dubflow.mix_control`) and the voice is added. Pass 1 measures it (EBU R128), pass 2
writes it with the one gain that reaches the target, or, when that gain would push the
true peak past the ceiling, through a peak limiter, written once more with the gain
corrected if it misses the target (see :func:`render_normalised`).
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from dubflow import fit
from dubflow.atomic import atomic_path, write_json
from dubflow.ffmpeg_needs import codec, filter_, muxer
from dubflow.ffmpeg_safe import file_arg, run_ffmpeg
from dubflow.mix_control import CONTROL_SUBTYPE, control_channels
from dubflow.mix_lines import sped_up, tempo_filter
from dubflow.mix_settings import LAYOUTS, STAGE, MixSettings, settings
from dubflow.mix_track import encode_track

log = logging.getLogger(__name__)

#: The speech band as a zero-phase FIR (ffmpeg's firequalizer, gains in dB by frequency):
#: flat 150-2400 Hz with shoulders down to 100 and up to 3500 Hz. Its delay is a whole
#: number of samples (BAND_FIR_S at the dub's rate), taken back out so that the band lines
#: up with the bed sample for sample: the band is subtracted from the bed, not added.
SPEECH_BAND = ((0, -100), (100, -100), (150, 0), (2400, 0), (3500, -100))  # (Hz, dB)
BAND_FIR_S = 0.01
#: How the mono voice is placed in each dub layout (mix_settings.LAYOUTS): centre for 5.1
#: and 7.1.
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


def ffmpeg_pass(source_wav: Path, control: Path | None, cfg: MixSettings, tail: str,
                dest: Path | None, duration_s: float, ffmpeg: dict | None,
                threads: int, meter: str = METER, original: Path | None = None) -> str:
    """One streaming pass over the whole mix, measured by ``ebur128`` at its end.

    Writes ``dest`` (24-bit WAV, RF64 past 4 GB) or, without it, only measures; returns
    ffmpeg's log, where the meters print their figures. ``original``: the original mix,
    for restored spans.
    """
    args = ["-i", file_arg(source_wav)]
    if control is not None:
        args += ["-i", file_arg(control)]
        if original is not None:
            args += ["-i", file_arg(original)]
    graph = mix_graph(cfg, control is not None, f"{tail},{meter}[out]",
                      restore=control is not None and original is not None)
    args += ["-filter_complex_threads", str(threads), "-filter_complex", graph,
             "-map", "[out]"]
    if dest is None:
        args += [*muxer("null"), file_arg(os.devnull)]
    else:
        args += ["-ar", str(cfg.sample_rate), *codec("pcm_s24le"), *muxer("wav", rf64="auto"),
                 file_arg(dest)]
    result = run_ffmpeg(args, stage=STAGE, path=source_wav, config=ffmpeg,
                        media_duration_s=duration_s)
    return result.stderr


def render_normalised(source_wav: Path, control: Path | None, dest: Path, cfg: MixSettings,
                      duration_s: float, ffmpeg: dict | None, threads: int,
                      original: Path | None = None, prior: dict | None = None) -> dict:
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
        with atomic_path(dest) if write else contextlib.nullcontext() as tmp:
            return ebur128_summaries(ffmpeg_pass(source_wav, control, cfg, tail, tmp,
                                                 duration_s, ffmpeg, threads, meter,
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
    over = peaks_over(cfg, measured["tp"], gain)
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


def peaks_over(cfg: MixSettings, peak_db: float, gain_db: float) -> float:
    """How far ``gain_db`` would take the mix's peaks past their target (> 0: limit them).
    ebur128 prints tenths of a dB; rounding keeps float noise from choosing the limiter."""
    return round(peak_db + gain_db - _peak_target(cfg), 2)


def metered_before(tail: str) -> str:
    """``tail`` (a gain or the limiter) with the mix metered before it as well (sample
    peaks, a sink of its own): the pass then also says what it would have measured."""
    return (filter_("asplit", 2) + "[pre][post];[pre]" + SAMPLE_METER + ","
            + filter_("anullsink") + ";[post]" + tail)


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
    measured, output = render_measured(metered_before(tail), write=True)
    would_limit = peaks_over(cfg, measured["tp"], cfg.target_lufs - measured["i"]) > 0
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
            if memo["normalization"] == "limited":
                int(memo["limiter_rate"])
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


def run_every_graph(workdir: Path, mix: dict | None, ffmpeg: dict | None) -> list[str]:
    """Run each kind of ffmpeg pass this stage can make on a second of audio: measuring,
    one gain, the limiter at the dub's rate and at 192 kHz, a reused gain metered before
    and after, the mkv track encoded in pieces, the original mix restored over the bed, and the
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
        ebur128_summary(ffmpeg_pass(source, control, cfg, tail, workdir / "dub.wav", 1.0,
                                    ffmpeg, 1, meter))
        ran.append(name)
    reuse = metered_before(gain_filter(-3.0))
    if len(ebur128_summaries(ffmpeg_pass(source, control, cfg, reuse, workdir / "dub.wav", 1.0,
                                         ffmpeg, 1))) != 2:
        raise AssertionError("ffmpeg printed one loudness summary for two meters")
    ran.append("reused gain")
    # pieces of 16 frames: the second second of the track is joined to the first
    encode_track(workdir / "dub.wav", workdir / "dub.mka", cfg, None, ffmpeg, piece_frames=16)
    ran.append("dub track in pieces")
    restore = write_control_of(workdir / "restore.wav", restore=True)
    ebur128_summary(ffmpeg_pass(source, restore, cfg, filter_("anull"), workdir / "dub.wav",
                                1.0, ffmpeg, 1, meter=SAMPLE_METER, original=source))
    ran.append("restore")
    placement = fit.Placement(id="0001", start=0.0, slot_s=0.8, available_s=0.8, natural_s=1.0,
                              borrowed_s=0.0, speed=1.25, trimmed_s=0.0)
    sped_up(line, placement, workdir, ffmpeg, None)
    ran.append(tempo_filter(1.25, ffmpeg).split("=")[0])
    return ran
