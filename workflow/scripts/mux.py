"""Stage mux: the deliverable mkv.

Every stream is copied bit for bit (no re-encode, no quality loss, seconds not hours):
the video, every audio track of the source (the dubbed dialogue, but also commentaries and
other languages, with their tags and flags), its subtitle tracks (forced and
hearing-impaired flags kept), attachments (fonts for ASS), chapters and global metadata;
and the dubs as the mix stage encoded them (``dub.mka``; see mix_track.dub_codec). Order: the
video, the dubs (the first one default), the source's audio tracks, the new subtitle
tracks, the source's subtitle tracks, attachments. ``mux.keep`` drops kinds of source
streams. The new tracks carry an ISO 639-2 language tag and a title, because that is what
players show in their track menus and pick defaults by; the source's keep their own, and
the dubbed dialogue track is tagged with the spoken language and titled "Original" when
it had no title. Every track then also gets the BCP-47 language element, which ffmpeg
does not write (dubflow.mkv_languages, in the space ffmpeg is asked to leave for it).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from dubflow import config_schema
from dubflow.atomic import atomic_path
from dubflow.ffmpeg_needs import codec, muxer
from dubflow.ffmpeg_safe import MediaInfo, StreamInfo, file_arg, probe, run_ffmpeg
from dubflow.streams import choose_audio
from dubflow.languages import iso639_2, language_name
from dubflow.mkv_languages import PADDING, add_bcp47
from dubflow.records import language_of, read_transcript

STAGE = "mux"
log = logging.getLogger(__name__)


@dataclass
class Track:
    """An extra input file that becomes one tagged track of the mkv."""

    path: str
    language: str  # ISO 639-1
    title: str


def mux_args(video: str | Path, info: MediaInfo, dialogue: StreamInfo, source_language: str,
             dubs: list[Track], subtitles: list[Track], output: str | Path,
             keep: tuple[str, ...]) -> list[str]:
    """The ffmpeg argv: inputs, stream maps, copy, then per-track tags and flags."""
    args = ["-i", file_arg(video)]
    for track in dubs + subtitles:
        args += ["-i", file_arg(track.path)]
    source_audio = info.audio_streams if "audio" in keep else [dialogue]
    source_subtitles = info.subtitle_streams if "subtitles" in keep else []
    args += ["-map", "0:V?"]
    args += [arg for i in range(len(dubs)) for arg in ("-map", f"{i + 1}:a:0")]
    args += [arg for s in source_audio for arg in ("-map", f"0:{s.index}")]
    args += [arg for i in range(len(subtitles)) for arg in ("-map", f"{len(dubs) + i + 1}:0")]
    args += [arg for s in source_subtitles for arg in ("-map", f"0:{s.index}")]
    if "attachments" in keep:
        args += ["-map", "0:t?"]
    args += ["-c", "copy", "-map_metadata", "0",
             "-map_chapters", "0" if "chapters" in keep else "-1"]
    for i in range(len(subtitles)):  # the new SubRip files; the source's are copied
        args += codec("srt", stream=f"s:{i}")
    for i, track in enumerate(dubs):
        args += [f"-metadata:s:a:{i}", f"language={iso639_2(track.language)}",
                 f"-metadata:s:a:{i}", f"title={track.title}",
                 f"-disposition:a:{i}", "default" if i == 0 else "0"]
    for k, stream in enumerate(source_audio, start=len(dubs)):
        if stream.index == dialogue.index:
            args += [f"-metadata:s:a:{k}", f"language={iso639_2(source_language)}"]
            if not stream.title:
                args += [f"-metadata:s:a:{k}",
                         f"title=Original ({language_name(source_language)})"]
        if dubs:  # only the default changes: every other flag (comment, ...) is kept
            args += [f"-disposition:a:{k}", "-default"]
        elif stream.index == dialogue.index:
            args += [f"-disposition:a:{k}", "+default"]
    for i, track in enumerate(subtitles):
        args += [
            f"-metadata:s:s:{i}", f"language={iso639_2(track.language)}",
            f"-metadata:s:s:{i}", f"title={track.title}",
            f"-disposition:s:{i}", "0",
        ]
    return args + [*muxer("matroska", metadata_header_padding=PADDING), file_arg(output)]


def mux(video: str | Path, transcript: str | Path, subtitle_files: list[str],
        output: str | Path, dub_files: list[str] = (), ffmpeg: dict | None = None,
        audio_stream: str | int = "auto", configured_language: str | None = None,
        keep: list[str] | tuple[str, ...] | None = None) -> None:
    """Write the mkv; ``keep`` is mux.keep (None: the schema's default, every kind)."""
    keep = config_schema.section("mux")["keep"] if keep is None else keep
    info = probe(video, stage=STAGE, config=ffmpeg)
    audio, why = choose_audio(info, audio_stream, configured_language, STAGE)
    log.info("dubbed dialogue: stream #%s (%s)", audio.index, why)
    source_language = read_transcript(transcript, STAGE)["language"]
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
        run_ffmpeg(mux_args(video, info, audio, source_language, dubs, subtitles, tmp,
                            tuple(keep)),
                   stage=STAGE, path=video, config=ffmpeg, media_duration_s=info.duration_s)
        add_bcp47(tmp, STAGE)  # ffmpeg writes only the ISO 639-2 language element
    log.info("muxed %s: video copied, %d dub track(s), original %s audio, %d subtitle "
             "track(s); kept from the source: %s", output, len(dubs), source_language,
             len(subtitles), ", ".join(keep) or "the dialogue only")


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
        audio_stream=sm.params.audio_stream,
        configured_language=sm.params.source_language,
        keep=sm.params.keep,
    )
