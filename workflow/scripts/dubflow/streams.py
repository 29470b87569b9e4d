"""Which audio stream of a source is the dialogue to dub.

Release files often carry several audio tracks (a commentary, a second language, an
existing dub), and the dialogue in the source language is not always the first. The
choice is made here, from ffprobe's view of the file, the same way by extract (which
decodes it) and mux (which copies it and tags it "Original"), and it is logged.
"""

from __future__ import annotations

from dubflow.errors import InputError
from dubflow.ffmpeg_safe import MediaInfo, StreamInfo, require_audio
from dubflow.languages import iso639_2

UNKNOWN = {None, "", "auto", "und"}


def choose_audio(info: MediaInfo, wanted: str | int = "auto", source_language: str | None = None,
                 stage: str = "extract") -> tuple[StreamInfo, str]:
    """(stream, why). ``wanted``: ``auto``; an audio stream number (0 = the first audio
    stream); or a language code (``en``/``eng``). ``auto`` takes the stream tagged with the
    source language when that is known, else the default one, else the first."""
    first = require_audio(info, stage)
    streams = info.audio_streams
    programme = [s for s in streams if not s.is_comment] or streams
    if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit()):
        number = int(wanted)
        if number >= len(streams):
            raise InputError(
                f"{info.path} has {len(streams)} audio stream(s), so audio_stream {number} "
                f"does not exist (stage {stage}); set audio_stream to auto or to a number "
                f"below {len(streams)}")
        return streams[number], f"audio stream {number} as configured"
    if wanted not in UNKNOWN:
        tagged = [s for s in streams if s.language and iso639_2(s.language) == iso639_2(wanted)]
        if not tagged:
            found = ", ".join(sorted({s.language or "untagged" for s in streams}))
            raise InputError(
                f"{info.path} has no audio stream tagged '{wanted}' (it has: {found}; stage "
                f"{stage}); set audio_stream to one of those, to a number, or to auto")
        return tagged[0], f"the first audio stream tagged '{wanted}', as configured"
    # auto: never a commentary or audio description while there is another stream
    if source_language not in UNKNOWN:
        tagged = [s for s in programme
                  if s.language and iso639_2(s.language) == iso639_2(source_language)]
        if tagged:
            default = [s for s in tagged if s.is_default]
            return (default or tagged)[0], f"tagged with the source language '{source_language}'"
    default = [s for s in programme if s.is_default]
    if default:
        return default[0], "the default audio stream"
    if programme[0] is not first:
        return programme[0], "the first audio stream that is not a commentary"
    return first, "the first audio stream"
