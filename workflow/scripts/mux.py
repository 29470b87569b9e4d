"""Stage mux: the deliverable mkv.

Every stream is copied bit for bit (no re-encode, no quality loss, seconds not hours): the
video and the original audio from the input, the dubs as the mix stage encoded them
(``dub.mka``, AAC; see mix.dub_codec). Audio tracks: the dubs first, the first one
default, then the original.
Every track carries an ISO 639-2 language tag and a title, because that is what players
show in their track menus and pick defaults by.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from dubflow.atomic import atomic_path
from dubflow.ffmpeg_needs import codec, muxer
from dubflow.ffmpeg_safe import file_arg, probe, require_audio, run_ffmpeg
from dubflow.languages import iso639_2, language_name

STAGE = "mux"
log = logging.getLogger(__name__)


@dataclass
class Track:
    """An extra input file that becomes one tagged track of the mkv."""

    path: str
    language: str  # ISO 639-1
    title: str


def language_of(path: str | Path) -> str:
    """out/{name}.{lang}.srt or work/{name}/{lang}/dub.mka -> lang (names may contain dots)."""
    path = Path(path)
    if path.name == "dub.mka":
        return path.parent.name
    return path.name.rsplit(".", 2)[-2]


def mux_args(video: str | Path, audio_index: int, source_language: str,
             dubs: list[Track], subtitles: list[Track], output: str | Path) -> list[str]:
    """The ffmpeg argv: inputs, stream maps, copy, then per-track tags.

    Audio order is the dubs (the first one default), then the original.
    """
    extras = dubs + subtitles
    args = ["-i", file_arg(video)]
    for track in extras:
        args += ["-i", file_arg(track.path)]
    args += ["-map", "0:V?"]
    args += [arg for i in range(len(dubs)) for arg in ("-map", f"{i + 1}:a:0")]
    args += ["-map", f"0:{audio_index}"]
    args += [arg for i in range(len(subtitles)) for arg in ("-map", f"{len(dubs) + i + 1}:0")]
    args += ["-c", "copy", *codec("srt", stream="s"), "-map_metadata", "0"]
    for i, track in enumerate(dubs):
        args += [f"-metadata:s:a:{i}", f"language={iso639_2(track.language)}",
                 f"-metadata:s:a:{i}", f"title={track.title}",
                 f"-disposition:a:{i}", "default" if i == 0 else "0"]
    original = len(dubs)
    args += [
        f"-metadata:s:a:{original}", f"language={iso639_2(source_language)}",
        f"-metadata:s:a:{original}", f"title=Original ({language_name(source_language)})",
        f"-disposition:a:{original}", "0" if dubs else "default",
    ]
    for i, track in enumerate(subtitles):
        args += [
            f"-metadata:s:s:{i}", f"language={iso639_2(track.language)}",
            f"-metadata:s:s:{i}", f"title={track.title}",
            f"-disposition:s:{i}", "0",
        ]
    return args + [*muxer("matroska"), file_arg(output)]


def mux(video: str | Path, transcript: str | Path, subtitle_files: list[str],
        output: str | Path, dub_files: list[str] = (), ffmpeg: dict | None = None) -> None:
    info = probe(video, stage=STAGE, config=ffmpeg)
    audio = require_audio(info, STAGE)
    source_language = json.loads(Path(transcript).read_text(encoding="utf-8"))["language"]
    dubs = [Track(str(p), language_of(p), f"{language_name(language_of(p))} dub")
            for p in dub_files]
    subtitles = []
    for path in subtitle_files:
        if Path(path).stat().st_size == 0:
            # No speech, no cues; ffmpeg cannot even open an empty SubRip file.
            log.info("skipping %s: it has no cues", path)
            continue
        language = language_of(path)
        subtitles.append(Track(str(path), language, language_name(language)))
    with atomic_path(output) as tmp:
        run_ffmpeg(mux_args(video, audio.index, source_language, dubs, subtitles, tmp),
                   stage=STAGE, path=video, config=ffmpeg, media_duration_s=info.duration_s)
    log.info("muxed %s: video copied, %d dub track(s), original %s audio, %d subtitle track(s)",
             output, len(dubs), source_language, len(subtitles))


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        mux,
        video=sm.input.video,
        transcript=sm.input.transcript,
        subtitle_files=list(sm.input.subtitles),
        dub_files=list(sm.input.dubs),
        output=sm.output.mkv,
        ffmpeg=sm.params.ffmpeg,
    )
