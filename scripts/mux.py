"""Stage mux: the deliverable mkv.

The video stream is copied bit for bit (no re-encode, no quality loss, seconds not hours).
Audio tracks: the dubs (later stages) first, the first one default, then the original.
Every track carries an ISO 639-2 language tag and a title, because that is what players
show in their track menus and pick defaults by.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from atomic import atomic_path
from ffmpeg_safe import file_arg, probe, require_audio, run_ffmpeg
from languages import iso639_2, language_name

STAGE = "mux"
log = logging.getLogger(__name__)


@dataclass
class SubtitleTrack:
    path: str
    language: str  # ISO 639-1
    title: str


def subtitle_language(path: str | Path) -> str:
    """out/{name}.{lang}.srt -> lang (names may contain dots; codes never do)."""
    return Path(path).name.rsplit(".", 2)[-2]


def mux_args(video: str | Path, audio_index: int, source_language: str,
             subtitles: list[SubtitleTrack], output: str | Path) -> list[str]:
    """The ffmpeg argv: inputs, stream maps, codecs, then per-track tags."""
    args = ["-i", file_arg(video)]
    for track in subtitles:
        args += ["-i", file_arg(track.path)]
    args += ["-map", "0:V?", "-map", f"0:{audio_index}"]
    args += [arg for i in range(len(subtitles)) for arg in ("-map", f"{i + 1}:0")]
    args += ["-c", "copy", "-c:s", "srt", "-map_metadata", "0"]
    name = language_name(source_language)
    args += [
        "-metadata:s:a:0", f"language={iso639_2(source_language)}",
        "-metadata:s:a:0", f"title=Original ({name})",
        "-disposition:a:0", "default",
    ]
    for i, track in enumerate(subtitles):
        args += [
            f"-metadata:s:s:{i}", f"language={iso639_2(track.language)}",
            f"-metadata:s:s:{i}", f"title={track.title}",
            f"-disposition:s:{i}", "0",
        ]
    return args + [file_arg(output)]


def mux(video: str | Path, transcript: str | Path, subtitle_files: list[str],
        output: str | Path, ffmpeg: dict | None = None) -> None:
    info = probe(video, stage=STAGE, config=ffmpeg)
    audio = require_audio(info, STAGE)
    source_language = json.loads(Path(transcript).read_text(encoding="utf-8"))["language"]
    tracks = []
    for path in subtitle_files:
        if Path(path).stat().st_size == 0:
            # No speech, no cues; ffmpeg cannot even open an empty SubRip file.
            log.info("skipping %s: it has no cues", path)
            continue
        language = subtitle_language(path)
        tracks.append(SubtitleTrack(str(path), language, language_name(language)))
    with atomic_path(output) as tmp:
        run_ffmpeg(mux_args(video, audio.index, source_language, tracks, tmp),
                   stage=STAGE, path=video, config=ffmpeg, media_duration_s=info.duration_s)
    log.info("muxed %s: video copied, original %s audio, %d subtitle track(s)",
             output, source_language, len(tracks))


if "snakemake" in globals():
    from rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        mux,
        video=sm.input.video,
        transcript=sm.input.transcript,
        subtitle_files=[sm.input.srt],
        output=sm.output.mkv,
        ffmpeg=sm.params.ffmpeg,
    )
