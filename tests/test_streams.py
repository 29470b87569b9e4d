"""The mkv keeps everything the source had: a release-like source, dubbed with the defaults.

The source: a 5.1 AC-3 English dialogue track (default), a stereo commentary (flagged as
such), a Japanese track, a forced "Signs" subtitle, an ASS subtitle with its font as an
attachment, chapters and a title. Checked with ffprobe, with stream hashes, and with
mkvmerge -J (Debian's mkvtoolnix, which CI installs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import soundfile as sf

from dubflow.errors import InputError
from dubflow.languages import bcp47
from dubflow.ffmpeg_safe import file_arg, probe, run_ffmpeg
from dubflow.streams import choose_audio
from test_workflow import make_workspace, snakemake

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
SIGNS = "1\n00:00:00,500 --> 00:00:02,000\nTHE STATION\n"
ASS = "\n".join([
    "[Script Info]", "ScriptType: v4.00+", "", "[V4+ Styles]",
    "Format: Name, Fontname, Fontsize, PrimaryColour, Bold, Italic, Alignment, Encoding",
    "Style: Default,DejaVu Sans,20,&H00FFFFFF,0,0,2,1", "", "[Events]",
    "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    "Dialogue: 0,0:00:01.00,0:00:03.00,Default,,0,0,0,,Good morning.", ""])
CHAPTERS = (";FFMETADATA1\ntitle=Episode one\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\n"
            "END=3000\ntitle=Opening\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=3000\nEND=6000\n"
            "title=Station\n")


def release(folder: Path, speech_video: Path, commentary_first: bool = False) -> Path:
    (folder / "signs.srt").write_text(SIGNS)
    (folder / "dialogue.ass").write_text(ASS)
    (folder / "chapters.txt").write_text(CHAPTERS)
    duration = probe(speech_video, stage="test").duration_s
    dialogue = ["-map", "0:a"]
    others = ["-map", "1:a", "-map", "2:a"]
    audio = others[:2] + dialogue + others[2:] if commentary_first else dialogue + others
    out = folder / ("commentary-first.mkv" if commentary_first else "release.mkv")
    d, c, j = (1, 0, 2) if commentary_first else (0, 1, 2)
    run_ffmpeg([
        "-i", file_arg(speech_video),
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}",
        "-f", "lavfi", "-i", f"sine=frequency=660:duration={duration}",
        "-i", file_arg(folder / "signs.srt"), "-i", file_arg(folder / "dialogue.ass"),
        "-i", file_arg(folder / "chapters.txt"),
        "-map", "0:v", *audio, "-map", "3", "-map", "4",
        "-map_metadata", "5", "-map_chapters", "5",
        "-c:v", "copy", f"-c:a:{d}", "ac3", f"-ac:a:{d}", "6", f"-c:a:{c}", "aac",
        f"-ac:a:{c}", "2", f"-c:a:{j}", "aac", "-c:s:0", "srt", "-c:s:1", "ass",
        "-attach", file_arg(FONT), "-metadata:s:t", "mimetype=font/ttf",
        f"-metadata:s:a:{d}", "language=eng", f"-disposition:a:{d}", "default",
        f"-metadata:s:a:{c}", "language=eng", f"-metadata:s:a:{c}", "title=Commentary",
        f"-disposition:a:{c}", "comment",
        f"-metadata:s:a:{j}", "language=jpn", f"-disposition:a:{j}", "0",
        "-metadata:s:s:0", "language=eng", "-metadata:s:s:0", "title=Signs",
        "-disposition:s:0", "forced",
        "-metadata:s:s:1", "language=eng", "-metadata:s:s:1", "title=Dialogue",
        file_arg(out)], stage="test", path=out)
    return out


def stream_hash(path: Path, index: int) -> str:
    run = run_ffmpeg(["-v", "error", "-i", file_arg(path), "-map", f"0:{index}", "-c", "copy",
                      "-f", "streamhash", "-"], stage="test", path=path)
    return run.stdout.split("=", 1)[-1].strip()


def test_auto_skips_a_commentary_that_comes_first(tmp_path, speech_video):
    info = probe(release(tmp_path, speech_video[0], commentary_first=True), stage="test")
    stream, why = choose_audio(info)
    assert (stream.channels, stream.language, stream.is_comment) == (6, "eng", False), why
    assert choose_audio(info, 0)[0].is_comment and choose_audio(info, "jpn")[0].language == "jpn"


def test_a_stream_that_is_not_there_is_one_sentence(tmp_path, speech_video):
    info = probe(release(tmp_path, speech_video[0]), stage="test")
    with pytest.raises(InputError, match=r"release.mkv has 3 audio stream\(s\), so audio_stream 5 "
                                         r"does not exist \(stage extract\); set audio_stream"):
        choose_audio(info, 5)
    with pytest.raises(InputError, match=r"release.mkv has no audio stream tagged 'fr' \(it has: "
                                         r"eng, jpn; stage mux\)"):
        choose_audio(info, "fr", stage="mux")


@pytest.mark.slow
def test_the_dubbed_mkv_keeps_every_stream_of_the_source(tmp_path, speech_video):
    source = release(tmp_path, speech_video[0])
    ws = make_workspace(tmp_path / "ws", {"ep": source}, target_languages=["pt"])
    run = snakemake(ws, "out/ep.mkv")
    assert run.returncode == 0, run.stderr[-3000:]
    mkv = ws / "out" / "ep.mkv"
    chosen = json.loads((ws / "work" / "ep" / "streams.json").read_text())["dubbed"]
    assert (chosen["index"], chosen["channels"], chosen["language"]) == (1, 6, "eng"), chosen
    before, after = probe(source, stage="test"), probe(mkv, stage="test")
    kinds = [(s.codec_type, s.codec_name, s.language, s.title) for s in after.streams]
    assert kinds[:2] == [("video", "h264", None, None), ("audio", "aac", "por", "Portuguese dub")]
    dub = after.streams[1]
    assert dub.is_default and dub.channels == 6  # the source's 5.1 layout
    # every source audio and subtitle stream, then the font, bit for bit, flags kept
    copied = {s.index: s for s in before.streams if s.codec_type != "video"}
    for src in copied.values():
        match = [s for s in after.streams if (s.codec_type, s.codec_name, s.language) ==
                 (src.codec_type, src.codec_name, src.language)
                 and (s.title == src.title or src.title is None)]
        assert match, (src, kinds)
        assert any(stream_hash(source, src.index) == stream_hash(mkv, s.index) for s in match)
    originals = [s for s in after.streams if s.codec_type == "audio"][1:]
    assert [s.is_default for s in originals] == [False, False, False]
    assert [s.title for s in originals][0] == "Original (English)"
    assert [s.is_comment for s in originals] == [False, True, False]
    identify = shutil.which("mkvmerge")
    if identify is None:
        if os.environ.get("DUBFLOW_REQUIRE_DISTRO_FFMPEG"):
            pytest.fail("mkvmerge (Debian's mkvtoolnix) is not installed, but CI installs it")
        pytest.skip("mkvmerge (Debian's mkvtoolnix) is not installed")
    report = json.loads(subprocess.run([identify, "-J", str(mkv)], capture_output=True,
                                       text=True, check=True).stdout)
    tracks = report["tracks"]
    assert report["errors"] == [] and report["warnings"] == [], report
    assert [t["type"] for t in tracks] == ["video", "audio", "audio", "audio", "audio",
                                           "subtitles", "subtitles", "subtitles", "subtitles"]
    # both language elements on every track: ISO 639-2 and BCP-47 (dubflow.mkv_languages)
    assert [(t["properties"]["language"], t["properties"].get("language_ietf"))
            for t in tracks][1] == ("por", "pt")
    assert all(t["properties"].get("language_ietf") == bcp47(t["properties"]["language"])
               for t in tracks), tracks
    assert [t["properties"].get("forced_track", False) for t in tracks
            if t["type"] == "subtitles"] == [False, False, True, False]
    assert len(report["attachments"]) == 1 and report["attachments"][0]["file_name"] == FONT.name
    assert report["chapters"][0]["num_entries"] == 2
    assert report["container"]["properties"].get("title") == "Episode one"
    # the dubbed voice is in the centre channel
    wav = tmp_path / "dub.wav"
    run_ffmpeg(["-i", file_arg(mkv), "-map", "0:a:0", "-c:a", "pcm_f32le", file_arg(wav)],
               stage="test", path=wav)
    audio, _ = sf.read(wav, dtype="float64")
    energy = (audio ** 2).mean(axis=0)
    assert energy[2] > 10 * max(energy[0], energy[1]), energy  # FC over FL, FR
    assert np.isfinite(energy).all()
