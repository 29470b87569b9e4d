"""The real workflow, run through the Snakemake CLI on generated media.

Each test works in its own folder (in/, work/, out/) with a config that points at the
fast tiny.en model, and checks the result with ffprobe, as a user would.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TEST_LINES, TINY_EN
from demo_media import word_error_rate
from dubflow.ffmpeg_safe import file_arg, probe, run_ffmpeg

pytestmark = pytest.mark.slow
WEIRD_NAME = "it's ep 1; $(touch pwned) — ünïcode"


# The engine's mechanics (names, resume, faults, batches) do not depend on how the dub
# sounds: those tests skip separation and use espeak-ng, which saves a model load and a
# separation per build. test_dubbing, test_fitting and test_streams run the defaults.
FAST = {"mix": {"separation": "none"}, "tts": {"backend": "espeak"}}


def make_workspace(path: Path, videos: dict[str, Path], fast: bool = False,
                   **overrides) -> Path:
    (path / "in").mkdir(parents=True, exist_ok=True)
    for name, video in videos.items():
        shutil.copy(video, path / "in" / f"{name}{video.suffix}")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["samples"] = "samples.tsv"  # absent unless a test writes it
    config["asr"]["model"] = str(TINY_EN)
    for key, value in [*(FAST.items() if fast else []), *overrides.items()]:
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    (path / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def snakemake(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, with the workspace as working directory."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
         "--configfile", "config.yaml", "--cores", "2", *args],
        cwd=workspace, capture_output=True, text=True, timeout=600,
    )


def video_md5(path: Path) -> str:
    """md5 of the first video stream's packets: equal iff the stream was copied."""
    out = run_ffmpeg(["-v", "error", "-i", file_arg(path), "-map", "0:v:0", "-c", "copy",
                      "-f", "md5", "-"], stage="test", path=path)
    return out.stdout.strip()


def file_states(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory, speech_video):
    """One full build of a video with an awkward name; shared by the checks below."""
    video, spoken = speech_video
    ws = make_workspace(tmp_path_factory.mktemp("ws"), {WEIRD_NAME: video}, fast=True)
    run = snakemake(ws, f"out/{WEIRD_NAME}.mkv")
    assert run.returncode == 0, run.stderr[-3000:]
    return ws, video, run


def test_mkv_has_copied_video_tagged_audio_and_subtitles(built):
    ws, video, _ = built
    mkv = ws / "out" / f"{WEIRD_NAME}.mkv"
    info = probe(mkv, stage="test")
    kinds = [s.codec_type for s in info.streams]
    assert kinds == ["video", "audio", "audio", "subtitle", "subtitle"]
    dub, original, source_subs, dub_subs = info.streams[1:]
    assert dub.language == "por" and dub.title == "Portuguese dub" and dub.is_default
    assert original.language == "eng" and original.title == "Original (English)"
    assert not original.is_default
    assert source_subs.language == "eng" and source_subs.codec_name == "subrip"
    assert dub_subs.language == "por" and dub_subs.title == "Portuguese"
    assert video_md5(mkv) == video_md5(video)
    assert abs(info.duration_s - probe(video, stage="test").duration_s) < 0.1
    assert not (ws / "pwned").exists()


def test_outputs_follow_the_contract(built):
    ws, _, _ = built
    for rel in ["work/{n}/audio.wav", "work/{n}/source.wav", "work/{n}/streams.json",
                "work/{n}/transcript.json",
                "work/{n}/speakers.rttm", "logs/{n}/diarize.log", "benchmarks/{n}/diarize.tsv",
                "work/{n}/speakers.local.rttm", "work/{n}/speaker_centroids.json",
                "logs/{n}/speaker_ids.log", "benchmarks/{n}/speaker_ids.tsv",
                "out/{n}.en.srt", "out/{n}.en.vtt", "logs/{n}/extract.log",
                "logs/{n}/transcribe.log", "logs/{n}/mux.log", "benchmarks/{n}/transcribe.tsv",
                "work/{n}/pt/translation.json", "work/{n}/pt/tts/lines.json",
                "work/{n}/pt/dub.wav", "work/{n}/pt/dub.mka", "work/{n}/pt/fit.json", "out/{n}.pt.srt",
                "out/{n}.pt.vtt", "logs/{n}/translate.pt.log", "logs/{n}/synthesize.pt.log",
                "logs/{n}/mix.pt.log", "benchmarks/{n}/mix.pt.tsv"]:
        assert (ws / rel.format(n=WEIRD_NAME)).is_file(), rel
    analysis = probe(ws / "work" / WEIRD_NAME / "audio.wav", stage="test").streams[0]
    assert (analysis.sample_rate, analysis.channels, analysis.codec_name) == (16000, 1, "pcm_s16le")
    source = probe(ws / "work" / WEIRD_NAME / "source.wav", stage="test").streams[0]
    assert (source.sample_rate, source.channels) == (48000, 2)
    transcript = json.loads((ws / "work" / WEIRD_NAME / "transcript.json").read_text())
    assert transcript["language"] == "en" and transcript["language_source"] == "detected"
    assert word_error_rate(TEST_LINES, transcript["segments"]) <= 0.10
    assert all(seg["words"] for seg in transcript["segments"])
    assert {seg["speaker"] for seg in transcript["segments"]} == {"SPEAKER_00"}  # one voice
    rttm = (ws / "work" / WEIRD_NAME / "speakers.rttm").read_text().splitlines()
    assert rttm and all(line.split()[7] == "SPEAKER_00" for line in rttm)
    # no series: the final RTTM is diarize's own, byte for byte
    local = (ws / "work" / WEIRD_NAME / "speakers.local.rttm").read_text().splitlines()
    assert rttm == local
    leftovers = [p for p in ws.rglob("*.partial*")]
    assert leftovers == []


def test_second_run_does_nothing_and_dry_run_touches_nothing(built):
    ws, _, _ = built
    before = file_states(ws)
    run = snakemake(ws, f"out/{WEIRD_NAME}.mkv")
    assert run.returncode == 0 and "Nothing to be done" in run.stdout + run.stderr
    dry = snakemake(ws, "-n", f"out/{WEIRD_NAME}.mkv")
    assert dry.returncode == 0
    after = {k: v for k, v in file_states(ws).items() if not k.startswith(".snakemake")}
    assert after == {k: v for k, v in before.items() if not k.startswith(".snakemake")}


def test_an_edited_transcript_rebuilds_only_what_depends_on_it(built, tmp_path):
    """A hand-corrected transcript re-runs subtitles and mux, never extract or ASR.

    (Snakemake checksums small inputs, so a bare `touch` of an unchanged small file is
    rightly ignored; a real edit is what a user does.) It edits a copy of the shared
    build, times kept, so the other tests see the build as it was, in any order.
    """
    ws = tmp_path / "copy"
    shutil.copytree(built[0], ws, symlinks=True)
    path = ws / "work" / WEIRD_NAME / "transcript.json"
    transcript = json.loads(path.read_text())
    transcript["segments"][0]["text"] = transcript["segments"][0]["text"].replace("soon", "now")
    path.write_text(json.dumps(transcript))
    dry = snakemake(ws, "-n", f"out/{WEIRD_NAME}.mkv")
    jobs = job_counts(dry.stdout)
    # both subtitle files, and the dub of the changed line
    assert jobs == {"translate": 1, "subtitles": 2, "synthesize": 1, "mix": 1, "mux": 1}, dry.stdout
    run = snakemake(ws, f"out/{WEIRD_NAME}.mkv")
    assert run.returncode == 0, run.stderr[-2000:]
    srt = (ws / "out" / f"{WEIRD_NAME}.en.srt").read_text()
    assert "leaving now" in srt.replace("\n", " ") and "soon" not in srt
    lines = len(transcript["segments"])
    assert f"{lines} lines, 1 translated, {lines - 1} from cache" in (
        ws / "logs" / WEIRD_NAME / "translate.pt.log").read_text()
    assert f"{lines} lines: 1 synthesized, {lines - 1} from cache" in (
        ws / "logs" / WEIRD_NAME / "synthesize.pt.log").read_text()
    os.utime(next((ws / "in").iterdir()))  # the video (> 1 MB: compared by time)
    dry = snakemake(ws, "-n", f"out/{WEIRD_NAME}.mkv")
    assert {"extract", "transcribe"} <= set(job_counts(dry.stdout)), dry.stdout


def job_counts(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}."""
    counts, table = {}, False
    for line in stdout.splitlines():
        if line.startswith("job "):
            table = True
        elif table and line.strip() and not line.startswith("---"):
            rule, _, count = line.rpartition(" ")
            if rule.strip() == "total":
                break
            counts[rule.strip()] = int(count)
    return counts


def test_dry_run_on_a_fresh_folder_creates_nothing(tmp_path, speech_video):
    ws = make_workspace(tmp_path, {"fresh": speech_video[0]}, fast=True)
    before = file_states(ws)
    dry = snakemake(ws, "-n")
    assert dry.returncode == 0, dry.stderr
    assert "extract" in dry.stdout and "transcribe" in dry.stdout
    now = {k: v for k, v in file_states(ws).items() if not k.startswith(".snakemake")}
    assert now == before
    assert not (ws / "out").exists() and not (ws / "work").exists()


def test_samples_sheet_rows_and_overrides(tmp_path, speech_video):
    ws = make_workspace(tmp_path, {}, fast=True)
    (ws / "samples.tsv").write_text(
        f"name\tpath\tsource_language\ttarget_languages\nlisted\t{speech_video[0]}\ten\tpt en\n"
    )
    run = snakemake(ws)  # default target: every video of the sheet
    assert run.returncode == 0, run.stderr[-3000:]
    transcript = json.loads((ws / "work" / "listed" / "transcript.json").read_text())
    assert transcript["language_source"] == "configured"
    assert (ws / "out" / "listed.mkv").is_file()


def one_line_error(run: subprocess.CompletedProcess) -> str:
    lines = [line for line in run.stderr.splitlines() if line.startswith("dubflow:")]
    assert lines, run.stderr[-3000:]
    return lines[0]


def test_corrupt_video_fails_with_one_sentence_and_nothing_in_out(tmp_path, speech_video):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(speech_video[0].read_bytes()[: 20000])
    ws = make_workspace(tmp_path / "ws", {"broken": broken}, fast=True)
    run = snakemake(ws, "out/broken.mkv")
    assert run.returncode != 0
    line = one_line_error(run)
    assert "broken.mp4" in line and "extract" in line
    assert "Traceback" not in run.stderr
    assert not (ws / "out").exists() or not any((ws / "out").iterdir())


def test_video_without_audio_is_refused(tmp_path, no_audio_video):
    ws = make_workspace(tmp_path, {"mute": no_audio_video}, fast=True)
    run = snakemake(ws, "out/mute.mkv")
    assert run.returncode != 0
    assert "no audio stream" in one_line_error(run)
    assert not (ws / "out").exists() or not any((ws / "out").iterdir())


def test_silent_video_still_gets_an_mkv(tmp_path, silent_video):
    ws = make_workspace(tmp_path, {"quiet": silent_video}, fast=True)
    run = snakemake(ws, "out/quiet.mkv")
    assert run.returncode == 0, run.stderr[-3000:]
    transcript = json.loads((ws / "work" / "quiet" / "transcript.json").read_text())
    assert transcript["segments"] == [] and transcript["language"] == "und"
    assert (ws / "work" / "quiet" / "speakers.rttm").read_text() == ""
    dub, original = probe(ws / "out" / "quiet.mkv", stage="test").audio_streams
    # No lines: the dub track is the original mix, and the mix log says so.
    assert dub.title == "Portuguese dub" and dub.is_default
    assert "has no lines to place" in (ws / "logs" / "quiet" / "mix.pt.log").read_text()
    # The muxer writes "und"; ffmpeg's Matroska reader reports "und" as no tag at all.
    assert original.language in (None, "und") and original.title == "Original (Undetermined)"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"asr": {"beam_size": "five"}}, "asr.beam_size"),
        ({"speling": 1}, "unknown key(s) 'speling'"),
        ({"asr": {"model": "/nonexistent/whisper"}}, "make setup"),
        ({"diarization": {"models_dir": "/nonexistent/senko"}}, "/nonexistent/senko"),
        ({"diarization": {"min_speakers": 4, "max_speakers": 2}}, "min_speakers"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, speech_video, overrides, expected):
    ws = make_workspace(tmp_path, {"x": speech_video[0]}, **overrides, fast=True)
    run = snakemake(ws, "-n", "out/x.mkv")
    output = run.stdout + run.stderr  # Snakemake prints parse-time errors on stdout
    assert run.returncode != 0
    assert expected in output
    assert "Traceback" not in output
    assert not (ws / "work").exists()


def test_unknown_target_says_where_the_video_should_be(tmp_path):
    ws = make_workspace(tmp_path, {}, fast=True)
    run = snakemake(ws, "-n", "out/nothing.mkv")
    assert run.returncode != 0 and "put it at in/nothing.<ext>" in run.stdout + run.stderr


def test_lint_is_clean():
    run = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Lints for" not in run.stdout + run.stderr


def test_slurm_profile_plans_without_a_cluster(tmp_path, speech_video):
    ws = make_workspace(tmp_path, {"ep": speech_video[0]}, fast=True)
    # the README's command: the cluster profile as the workflow profile, so that
    # profiles/default cannot override it; --cores (one node's CPUs) caps every job
    dry = snakemake(ws, "--workflow-profile", str(ROOT / "profiles" / "slurm"), "-n")
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert "slurm_partition=cpu" in dry.stdout
    assert "mem_mb=4000" in dry.stdout  # diarize's own limit, not the default profile's
    assert re.search(r"threads: \d", dry.stdout)
    assert not re.search(r"threads: ([3-9]|\d\d)", dry.stdout), "a job asks for more CPUs than --cores"
    assert {"extract", "transcribe"} <= set(job_counts(dry.stdout))
    assert not (ws / "work").exists()
