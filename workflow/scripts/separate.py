"""Stage separate: the source's music and effects without its dialogue (the bed).

The dub is mixed over this bed instead of over the original mix, so the original voices
no longer play under the dubbed ones (ducking alone left them 12 dB down) nor between
lines. The separator is Spleeter's 2-stem model (mix.separation: spleeter, see
dubflow/separation.py) or the DTLN speech enhancer (dtln, dubflow/dtln.py); the bed is
``source − vocals`` at the source's rate and channels.

The QA page shows how much speech the bed still holds: the separator is run a second
time, on the first minutes of the bed, and what it still finds there is compared with
what it found in the same minutes of the source (a self-estimate: it cannot hear what it
cannot separate).
"""

import logging
from pathlib import Path

import soundfile as sf

from dubflow import separation
from dubflow.atomic import write_json

STAGE = "separate"
BLEED_PROBE_S = 120.0  # the bleed is estimated on this much audio from the start
log = logging.getLogger(__name__)


def bleed_db(bed_wav: Path, speech_db: float, threads: int, method: str,
             dtln_model: str | Path | None) -> float | None:
    """Speech energy the separator still finds in the bed's first BLEED_PROBE_S, relative
    to ``speech_db``, what it found in the same span of the source (None when that span
    holds no speech to compare with)."""
    if speech_db < -70:
        return None
    rate = sf.info(str(bed_wav)).samplerate
    bed, _ = sf.read(str(bed_wav), frames=int(BLEED_PROBE_S * rate), dtype="float32",
                     always_2d=True)
    left = separation.separator(method, dtln_model)(bed, rate, threads)
    return round(separation.energy_db(left) - speech_db, 1)


def run(source_wav: str | Path, bed_wav: str | Path, report_json: str | Path,
        method: str = "spleeter", threads: int = 1,
        dtln_model: str | Path | None = None) -> dict:
    """Write the bed and a small report (figures for the log and the QA page)."""
    stats = separation.separate_file(Path(source_wav), Path(bed_wav), threads=threads,
                                     probe_s=BLEED_PROBE_S, method=method,
                                     dtln_model=dtln_model)
    stats["bleed_db"] = bleed_db(Path(bed_wav), stats.pop("vocals_probe_db"), threads,
                                 method, dtln_model)
    stats["method"] = method
    log.info("separated %.1f s at RTF %.3f (peak %.0f MB); speech left in the bed: %s dB",
             stats["seconds"], stats["rtf"], stats["peak_rss_mb"], stats["bleed_db"])
    write_json(report_json, stats)
    return stats


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(sm, STAGE, run, source_wav=sm.input.source, bed_wav=sm.output.bed,
             report_json=sm.output.report, method=sm.params.method, threads=sm.threads,
             dtln_model=sm.params.dtln_model)
