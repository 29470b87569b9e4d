"""Every common container goes through extract and mux with its streams intact."""

import json

import pytest

from conftest import default_config
from extract import extract
from dubflow.ffmpeg_safe import file_arg, probe, run_ffmpeg
from mux import mux
from subtitles import run as write_subtitles

# container -> (video codec args, audio codec args), as such files are usually made
CONTAINERS = {
    "mkv": (["-c:v", "copy"], ["-c:a", "libopus", "-b:a", "64k"]),
    "mov": (["-c:v", "copy"], ["-c:a", "copy"]),
    "webm": (["-c:v", "libvpx", "-b:v", "300k", "-deadline", "realtime", "-cpu-used", "8"],
             ["-c:a", "libopus", "-b:a", "64k"]),
    "avi": (["-c:v", "mpeg4", "-q:v", "5"], ["-c:a", "libmp3lame", "-b:a", "96k"]),
    "mp4": (["-c:v", "copy"], ["-c:a", "ac3", "-ac", "6"]),  # 5.1 AC-3 in mp4
}


def video_md5(path):
    out = run_ffmpeg(["-v", "error", "-i", file_arg(path), "-map", "0:v:0", "-c", "copy",
                      "-f", "md5", "-"], stage="test", path=path)
    return out.stdout.strip()


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_container_extract_and_mux(container, speech_video, tmp_path):
    source, _ = speech_video
    video_args, audio_args = CONTAINERS[container]
    video = tmp_path / f"input.{container}"
    run_ffmpeg(["-i", file_arg(source), "-map", "0:v", "-map", "0:a", *video_args, *audio_args,
                "-t", "4", file_arg(video)], stage="test", path=video)
    original = probe(video, stage="test")

    info = extract(video, tmp_path / "audio.wav", tmp_path / "source.wav")
    assert info.audio_streams
    analysis = probe(tmp_path / "audio.wav", stage="test")
    assert (analysis.streams[0].sample_rate, analysis.streams[0].channels) == (16000, 1)
    assert abs(analysis.duration_s - original.duration_s) < 0.2
    bed = probe(tmp_path / "source.wav", stage="test").streams[0]
    assert bed.channels == original.audio_streams[0].channels
    assert bed.sample_rate == original.audio_streams[0].sample_rate

    transcript = tmp_path / "transcript.json"
    transcript.write_text(json.dumps({"language": "en", "segments": [
        {"start": 0.5, "end": 2.0, "text": "Hello.", "words": []}]}))
    srt = tmp_path / "x.en.srt"
    write_subtitles(transcript, default_config()["subtitles"],
                    srt_path=srt, vtt_path=tmp_path / "x.en.vtt")
    out = tmp_path / "out.mkv"
    mux(video, transcript, [str(srt)], out)
    muxed = probe(out, stage="test")
    assert [s.codec_type for s in muxed.streams] == ["video", "audio", "subtitle"]
    assert muxed.streams[0].codec_name == original.video_streams[0].codec_name
    assert muxed.streams[1].codec_name == original.audio_streams[0].codec_name
    assert video_md5(out) == video_md5(video)
    assert abs(muxed.duration_s - original.duration_s) < 0.2
