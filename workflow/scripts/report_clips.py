"""Stage report_clips: the QA page's per-line audio, the source and the dub of each line.

A rule of its own (not part of the report stage) because it needs ffmpeg and the media
env, and so that the page can be re-rendered without cutting the clips again. The lines
are joined exactly as the page joins them (``dubflow.qa_data``), and the folder's
``clips.json`` tells the page which clip belongs to which line (``dubflow.qa_clips``).
"""

import logging
import time
from pathlib import Path

from dubflow.qa_clips import write_clips
from dubflow.qa_data import load_languages
from dubflow.records import language_of

STAGE = "report_clips"
log = logging.getLogger(__name__)


def build(translations: list, fits: list, source_audio: str | Path, dubs: list,
          output_dir: str | Path, ffmpeg: dict | None = None,
          cache: str | Path | None = None) -> None:
    """Cut out/{name}.report/: one source clip per line span, one dub clip per voiced line."""
    started = time.perf_counter()
    languages = load_languages(translations, fits, [], STAGE)
    manifest, encoded = write_clips(languages, source_audio,
                                    {language_of(p): Path(p) for p in dubs}, output_dir,
                                    ffmpeg, cache)
    files = [p for p in Path(output_dir).iterdir() if p.suffix == ".webm"]
    log.info("%s: %d clips for %d lines (%d encoded, %d from the cache), %.0f kB, %.1f s",
             output_dir, len(files), sum(len(lines) for lines in manifest.values()), encoded,
             len(files) - encoded, sum(p.stat().st_size for p in files) / 1024,
             time.perf_counter() - started)


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        build,
        translations=list(sm.input.translations),
        fits=list(sm.input.fits),
        source_audio=sm.input.audio,
        dubs=list(sm.input.dubs),
        output_dir=sm.output.clips,
        ffmpeg=sm.params.ffmpeg,
        cache=sm.params.cache,
    )
