"""Stage extract: the video's speech, decoded once into the two WAVs later stages need.

- ``audio.wav``: 16 kHz mono PCM16, what Whisper, the VAD and diarization expect;
- ``source.wav``: the original mix at its own rate and channel count (24-bit, RF64 past
  4 GB), the bed that the dub is mixed over.

Both come from the first audio stream, in one ffmpeg call so a 2-hour film is read once.
"""

import logging
from pathlib import Path

from dubflow.atomic import atomic_path, write_json
from dubflow.ffmpeg_needs import codec, muxer
from dubflow.ffmpeg_safe import MediaInfo, file_arg, probe, run_ffmpeg
from dubflow.streams import choose_audio
from dubflow.wav import ANALYSIS_RATE

STAGE = "extract"
log = logging.getLogger(__name__)


def extract(video: str | Path, analysis_wav: str | Path, source_wav: str | Path,
            ffmpeg: dict | None = None, audio_stream: str | int = "auto",
            source_language: str | None = None,
            streams_json: str | Path | None = None) -> MediaInfo:
    """Write both WAVs atomically; a file with no audio stream fails before decoding."""
    info = probe(video, stage=STAGE, config=ffmpeg)
    stream, why = choose_audio(info, audio_stream, source_language, STAGE)
    log.info("audio stream #%s (%s): %s, %s Hz, %s ch, %.1f s, language %s", stream.index,
             why, stream.codec_name, stream.sample_rate, stream.channels,
             info.duration_s or -1, stream.language or "untagged")
    if streams_json:  # which stream was dubbed and why, for the QA page
        write_json(streams_json, {
            "dubbed": {"index": stream.index, "why": why, "codec": stream.codec_name,
                       "channels": stream.channels, "language": stream.language,
                       "title": stream.title},
            "audio_streams": len(info.audio_streams)})
    with atomic_path(analysis_wav) as analysis_tmp, atomic_path(source_wav) as source_tmp:
        run_ffmpeg(
            [
                "-i", file_arg(video),
                "-map", f"0:{stream.index}", "-vn", "-sn", "-dn",
                "-ac", "1", "-ar", str(ANALYSIS_RATE), *codec("pcm_s16le"), *muxer("wav"),
                file_arg(analysis_tmp),
                "-map", f"0:{stream.index}", "-vn", "-sn", "-dn",
                *codec("pcm_s24le"), *muxer("wav", rf64="auto"),
                file_arg(source_tmp),
            ],
            stage=STAGE,
            path=video,
            config=ffmpeg,
            media_duration_s=info.duration_s,
        )
    return info


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        extract,
        video=sm.input.video,
        analysis_wav=sm.output.analysis,
        source_wav=sm.output.source,
        streams_json=sm.output.streams,
        ffmpeg=sm.params.ffmpeg,
        audio_stream=sm.params.audio_stream,
        source_language=sm.params.source_language,
    )
