"""Stage mix: the dub track, lines at their source times over the ducked original mix.

Inputs are ``source.wav`` (the original mix, any rate and layout, possibly hours long) and
the synthesize stage's ``tts/`` folder (``lines.json`` plus one wav per line). Output is
``dub.wav`` (``mix.sample_rate``, ``mix.channels``, 24-bit, at ``mix.target_lufs``) and
``fit.json`` (per-line timing decisions and loudness figures, read by the QA report).

How (each step's module says why it works that way):

1. :func:`fit.plan` decides per line: as is, borrow silence, speed up, trim; each line is
   then prepared to fit (:mod:`dubflow.mix_lines`).
2. Python writes a *control track*: the voice, and the gains that duck the bed under it
   (:mod:`dubflow.mix_control`).
3. One ffmpeg graph sums bed and voice while streaming, measures it and writes it at the
   target loudness under the true-peak ceiling (:mod:`dubflow.mix_render`).
4. The mkv's track is encoded from dub.wav in pieces that are kept, so an edit encodes
   again only the piece it changed (:mod:`dubflow.mix_track`).

This script resolves the ``mix:`` section (:mod:`dubflow.mix_settings`), runs the four
steps and writes fit.json.
"""

import json
import logging
import math
from pathlib import Path

from dubflow import fit, records
from dubflow.atomic import scratch_dir
from dubflow.errors import InputError
from dubflow.ffmpeg_safe import probe, require_audio
from dubflow.mix_control import duck_intervals, placed_lines, restore_spans, write_control
from dubflow.mix_lines import GAP_S, read_lines, voice_rate
from dubflow.mix_render import read_gain_memo, render_normalised, write_gain_memo
from dubflow.mix_settings import STAGE, settings
from dubflow.mix_track import encode_track

log = logging.getLogger(__name__)


def _rounded(value: object) -> float | None:
    """JSON has no -inf: unmeasurable loudness is written as null."""
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 2)
    return None


def run(source_wav: str | Path, tts_dir: str | Path, dub_wav: str | Path,
        fit_json: str | Path, mix: dict, ffmpeg: dict | None = None,
        threads: int = 1, tempo_cache: str | Path | None = None,
        dub_track: str | Path | None = None, original_wav: str | Path | None = None,
        gain_memo: str | Path | None = None, track_cache: str | Path | None = None) -> dict:
    """Write dub.wav, fit.json and (if asked) ``dub_track``, the same audio encoded for
    the mkv (Matroska audio, AAC); return the fit.json content.

    ``source_wav`` is what the dub goes over (the separated bed, or the original mix);
    ``original_wav`` the original mix, played again where a line is not voiced when
    mix.restore_dialogue is on. ``tempo_cache``: a folder for sped-up lines
    (``<tts.cache_dir>/tempo``), or None. ``gain_memo``: where this video's last gain
    decision is kept (``<mix.cache_dir>/gain/<name>.<lang>.json``), or None.
    ``track_cache``: where the encoded pieces of ``dub_track`` are kept
    (``<mix.cache_dir>/aac``, :mod:`dubflow.mix_track`), or None.
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

    with scratch_dir(dub_wav) as workdir:
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
                                     threads, Path(original_wav) if restored else None,
                                     read_gain_memo(memo, cfg, duration))
    if dub_track:
        encode_track(dub_wav, Path(dub_track), cfg, Path(track_cache) if track_cache else None,
                     ffmpeg, threads=threads)
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
             gain_memo=sm.params.gain_memo, track_cache=sm.params.track_cache)
