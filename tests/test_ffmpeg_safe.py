"""Tests for ffmpeg_safe, against the real ffmpeg/ffprobe (no mocks of either).

Media is generated in ``tmp_path`` with ffmpeg's lavfi sources through the module itself.
Failures that real ffmpeg cannot produce on demand (a hang, EAGAIN) use tiny ``#!/bin/sh``
stand-ins configured as ``ffmpeg.ffmpeg``, exactly as a user would point the config at
another binary.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dubflow import ffmpeg_safe
from dubflow.errors import ConfigError, FFmpegError, InputError
from dubflow.ffmpeg_safe import (
    FFmpegInputError,
    file_arg,
    probe,
    require_audio,
    resolve_binary,
    run_ffmpeg,
    settings,
    timeout_for,
)

SCRIPTS = Path(ffmpeg_safe.__file__).resolve().parents[1]  # workflow/scripts

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def make_clip(dest: Path, *, seconds: float = 2, audio: bool = True,
              language: str | None = None) -> Path:
    """A tiny H.264 (+ mono AAC) clip made by the real ffmpeg."""
    args = ["-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=96x64:rate=10"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    if language:
        args += ["-metadata:s:a:0", f"language={language}"]
    run_ffmpeg([*args, file_arg(dest)], stage="test-setup", path=dest)
    return dest


def fake_binary(path: Path, body: str) -> Path:
    """Write an executable shell script standing in for ffmpeg."""
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


def counting_fake(tmp_path: Path, stderr_line: str, fail_times: int = 1_000) -> Path:
    """A fake ffmpeg that counts its runs in ``count`` and fails the first ``fail_times``."""
    return fake_binary(tmp_path / "ffmpeg", f"""
        n=$(( $(cat "{tmp_path}/count" 2>/dev/null || echo 0) + 1 )); echo $n > "{tmp_path}/count"
        if [ $n -le {fail_times} ]; then echo "{stderr_line}" >&2; exit 1; fi
        echo done
        """)


def runs(tmp_path: Path) -> int:
    count = tmp_path / "count"
    return int(count.read_text()) if count.exists() else 0


def is_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] in ("Z", "X")


def wait_until(predicate, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def assert_one_sentence(err: Exception, *parts: str) -> None:
    text = str(err)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, (part, text)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch) -> None:
    monkeypatch.setattr(ffmpeg_safe, "_RETRY_BACKOFF_S", 0.01)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s video with an English-tagged audio track, shared by the read-only tests."""
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", language="eng")


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s video without any audio stream."""
    return make_clip(tmp_path_factory.mktemp("media") / "silent.mp4", audio=False)


# --------------------------------------------------------------------------------------
# binaries and config
# --------------------------------------------------------------------------------------


def test_auto_finds_working_binaries() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        binary = resolve_binary(tool)
        assert os.path.isabs(binary) and os.access(binary, os.X_OK)
        result = ffmpeg_safe.run(tool, ["-version"], stage="test", path=None)
        assert result.stdout.startswith(f"{tool} version"), result.stdout[:200]


def test_configured_binary_is_used_with_global_flags(tmp_path: Path) -> None:
    record = tmp_path / "argv.txt"
    fake = fake_binary(tmp_path / "my-ffmpeg", f'for a in "$@"; do echo "$a"; done > "{record}"\n')
    assert resolve_binary("ffmpeg", str(fake)) == str(fake)
    media = tmp_path / "in.mp4"
    run_ffmpeg(["-i", file_arg(media), "-f", "null", "-"], stage="test", path=media,
               config={"ffmpeg": str(fake)})
    argv = record.read_text().splitlines()
    assert argv[:4] == ["-nostdin", "-hide_banner", "-y", "-nostats"]
    assert argv[4:] == ["-i", f"file:{media}", "-f", "null", "-"]


@pytest.mark.parametrize("tool", ["ffmpeg", "ffprobe"])
def test_configured_missing_binary_names_the_key(tmp_path: Path, tool: str) -> None:
    missing = tmp_path / "no" / tool
    with pytest.raises(FFmpegError) as info:
        resolve_binary(tool, str(missing))
    assert_one_sentence(info.value, f"ffmpeg.{tool}", str(missing), "does not exist")
    # The same sentence reaches callers of run_*, with the stage attached.
    with pytest.raises(FFmpegError) as info:
        ffmpeg_safe.run(tool, ["-version"], stage="extract", path="x.mp4",
                        config={tool: str(missing)})
    assert f"ffmpeg.{tool}" in str(info.value) and info.value.stage == "extract"


def test_configured_non_executable_binary_is_a_clear_error(tmp_path: Path) -> None:
    plain = tmp_path / "ffmpeg"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)
    with pytest.raises(FFmpegError) as info:
        resolve_binary("ffmpeg", str(plain))
    assert_one_sentence(info.value, "ffmpeg.ffmpeg", "not an executable", str(plain))


def test_bare_configured_name_is_looked_up_on_path(tmp_path: Path, monkeypatch) -> None:
    fake_binary(tmp_path / "ffmpeg-pinned", "exit 0\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert resolve_binary("ffmpeg", "ffmpeg-pinned") == str(tmp_path / "ffmpeg-pinned")


def test_settings_defaults_and_timeout_budget() -> None:
    cfg = settings(None)
    assert (cfg.ffmpeg, cfg.ffprobe, cfg.retries, cfg.timeout_s) == ("auto", "auto", 2, None)
    assert timeout_for(cfg, None) == 60
    assert timeout_for(cfg, 3600) == 60 + 2.0 * 3600
    assert timeout_for(settings({"timeout_s": 5}), 3600) == 5
    assert timeout_for(settings({"min_timeout_s": 10, "timeout_per_media_s": 0.5}), 100) == 60
    with pytest.raises(ConfigError, match="ffmpeg.retries"):
        settings({"retries": -1})


# --------------------------------------------------------------------------------------
# timeouts and retries
# --------------------------------------------------------------------------------------


def test_hanging_binary_is_killed_with_its_children(tmp_path: Path) -> None:
    fake = fake_binary(tmp_path / "ffmpeg", f"""
        echo $$ > "{tmp_path}/leader.pid"
        sleep 60 &
        echo $! > "{tmp_path}/child.pid"
        wait
        """)
    media = tmp_path / "episode 01.mkv"
    start = time.monotonic()
    with pytest.raises(FFmpegError) as info:
        run_ffmpeg(["-i", file_arg(media), file_arg(tmp_path / "o.wav")], stage="extract",
                   path=media, config={"ffmpeg": str(fake), "timeout_s": 1})
    elapsed = time.monotonic() - start
    assert elapsed < 5, elapsed  # and a timeout is not retried: one attempt only
    assert_one_sentence(info.value, "timed out after 1 s", "extract", str(media))
    assert not info.value.transient and info.value.stage == "extract"
    for name in ("leader.pid", "child.pid"):
        pid = int((tmp_path / name).read_text())
        assert wait_until(lambda pid=pid: is_gone(pid)), f"{name} {pid} still running"


def test_runner_death_takes_ffmpeg_with_it(tmp_path: Path) -> None:
    """ffmpeg runs in its own session, so it must not outlive a killed Snakemake job."""
    pid_file = tmp_path / "leader.pid"
    fake = fake_binary(tmp_path / "ffmpeg", f'echo $$ > "{pid_file}"\nexec sleep 60\n')
    code = ("from dubflow import ffmpeg_safe\n"
            f"ffmpeg_safe.run_ffmpeg(['-version'], stage='t', path=None,"
            f" config={{'ffmpeg': {str(fake)!r}}})\n")
    runner = subprocess.Popen([sys.executable, "-c", code],
                              env={**os.environ, "PYTHONPATH": str(SCRIPTS)})
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10)
        runner.send_signal(signal.SIGKILL)
        runner.wait(5)
        pid = int(pid_file.read_text())
        assert wait_until(lambda: is_gone(pid)), "ffmpeg outlived the killed runner"
    finally:
        if runner.poll() is None:
            runner.kill()


def test_transient_failure_is_retried(tmp_path: Path) -> None:
    fake = counting_fake(tmp_path, "file:/x.mp4: Resource temporarily unavailable", fail_times=1)
    result = run_ffmpeg(["-version"], stage="extract", path="x.mp4", config={"ffmpeg": str(fake)})
    assert result.stdout.strip() == "done"
    assert runs(tmp_path) == 2


def test_persistent_transient_failure_stops_after_the_retries(tmp_path: Path) -> None:
    fake = counting_fake(tmp_path, "Cannot allocate memory")
    with pytest.raises(FFmpegError) as info:
        run_ffmpeg(["-version"], stage="mix", path="x.wav",
                   config={"ffmpeg": str(fake), "retries": 2})
    assert runs(tmp_path) == 3
    assert info.value.transient
    assert_one_sentence(info.value, "temporary", "mix", "x.wav")


@pytest.mark.parametrize("stderr_line", [
    "file:/x.mp4: Invalid data found when processing input",
    "Stream map '0:a:0' matches no streams.",
    "file:/x.mp4: Permission denied",
])
def test_permanent_failure_is_not_retried(tmp_path: Path, stderr_line: str) -> None:
    fake = counting_fake(tmp_path, stderr_line)
    with pytest.raises(FFmpegError) as info:
        run_ffmpeg(["-version"], stage="extract", path="x.mp4",
                   config={"ffmpeg": str(fake), "retries": 5})
    assert runs(tmp_path) == 1
    assert not info.value.transient and info.value.returncode == 1
    assert stderr_line in info.value.stderr_tail


# --------------------------------------------------------------------------------------
# friendly errors from real ffmpeg
# --------------------------------------------------------------------------------------


def test_random_bytes_are_reported_as_corrupt(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(20_000))
    out = tmp_path / "o.wav"
    for call in (
        lambda: probe(junk, stage="extract"),
        lambda: run_ffmpeg(["-i", file_arg(junk), file_arg(out)], stage="extract", path=junk),
    ):
        with pytest.raises(FFmpegError) as info:
            call()
        err = info.value
        assert isinstance(err, InputError)
        assert_one_sentence(err, str(junk), "stage extract", "corrupt")
        assert "Invalid data found" in err.stderr_tail and "Invalid data found" in err.detail
        assert "Invalid data" not in str(err)
        assert err.stage == "extract" and err.path == str(junk)
        assert not out.exists()


def test_truncated_mp4_is_reported_as_corrupt(tmp_path: Path, clip: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:3000])
    with pytest.raises(FFmpegInputError) as info:
        probe(cut, stage="extract")
    assert_one_sentence(info.value, str(cut), "extract", "corrupt")
    assert "moov atom not found" in info.value.detail


def test_missing_input_says_so(tmp_path: Path) -> None:
    gone = tmp_path / "gone.mp4"
    with pytest.raises(InputError) as info:
        probe(gone, stage="extract")
    assert_one_sentence(info.value, str(gone), "could not find", "extract")


def test_full_disk_says_so(tmp_path: Path) -> None:
    with pytest.raises(FFmpegError) as info:
        run_ffmpeg(["-f", "lavfi", "-i", "sine=duration=30", "-f", "wav", file_arg("/dev/full")],
                   stage="mix", path="dub.wav")
    assert_one_sentence(info.value, "disk filled up", "dub.wav", "mix", "free some space")
    assert "No space left on device" in info.value.detail


def test_bad_command_gets_the_generic_sentence(tmp_path: Path) -> None:
    with pytest.raises(FFmpegError) as info:
        run_ffmpeg(["-no_such_option", "1", "-f", "lavfi", "-i", "sine", "-f", "null", "-"],
                   stage="mix", path="dub.wav")
    assert not isinstance(info.value, InputError)
    assert_one_sentence(info.value, "dub.wav", "mix", "see the log")
    assert "no_such_option" in info.value.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable_input_says_permission(tmp_path: Path, clip: Path) -> None:
    locked = tmp_path / "locked.mp4"
    shutil.copy(clip, locked)
    locked.chmod(0)
    with pytest.raises(FFmpegError) as info:
        probe(locked, stage="extract")
    assert_one_sentence(info.value, "permission", str(locked))


def test_video_without_audio(tmp_path: Path, silent_clip: Path) -> None:
    info = probe(silent_clip, stage="extract")
    assert info.audio_streams == []
    assert len(info.video_streams) == 1
    with pytest.raises(InputError) as err:
        require_audio(info, "extract")
    assert_one_sentence(err.value, str(silent_clip), "has no audio stream", "extract")

    # The same sentence when a stage just runs its extract command on the file.
    for select in (["-map", "0:a:0"], ["-vn"]):
        with pytest.raises(FFmpegInputError) as err:
            run_ffmpeg(["-i", file_arg(silent_clip), *select, "-ac", "1",
                        file_arg(tmp_path / "audio.wav")], stage="extract", path=silent_clip)
        assert_one_sentence(err.value, str(silent_clip), "has no audio stream", "extract")
        assert "matches no streams" in err.value.detail or "any stream" in err.value.detail


# --------------------------------------------------------------------------------------
# arguments and file names
# --------------------------------------------------------------------------------------

AWKWARD_NAMES = [
    "with space.mp4",
    "it's.mp4",
    'say "hi".mp4',
    "a;b.mp4",
    "$(touch pwned).mp4",
    "épisode 01 — ünïcode.mp4",
    "-rf.mp4",
    "colon:name.mp4",
    "concat:x|y.mp4",
    "50%.mp4",
]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_awkward_file_names_work_as_input_and_output(tmp_path: Path, clip: Path, monkeypatch,
                                                     name: str) -> None:
    monkeypatch.chdir(tmp_path)  # relative names: file_arg must make them absolute
    shutil.copy(clip, tmp_path / name)
    (tmp_path / "out").mkdir()
    out = Path("out") / name
    run_ffmpeg(["-i", file_arg(name), "-c", "copy", file_arg(out)], stage="mux", path=name)
    info = probe(out, stage="mux")
    assert info.audio_streams and len(info.video_streams) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", name])
    assert [p.name for p in (tmp_path / "out").iterdir()] == [name]
    assert not Path(SCRIPTS.parents[1] / "pwned").exists()


def test_file_arg_is_absolute_and_refuses_line_breaks(tmp_path: Path) -> None:
    assert file_arg("-x.mp4") == "file:" + os.path.join(os.getcwd(), "-x.mp4")
    with pytest.raises(InputError) as info:
        file_arg(tmp_path / "two\nlines.mp4")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("args, error", [
    (["-i", Path("x.mp4")], TypeError),
    (["-t", 5], TypeError),
    ("-i x.mp4 out.wav", TypeError),
    (["-metadata", "title=a\x00b"], ValueError),
    (["-metadata", "title=a\nb"], ValueError),
    (["-i", "-rf.mp4"], ValueError),
])
def test_bad_args_are_refused_before_anything_starts(tmp_path: Path, args, error) -> None:
    started = tmp_path / "started"
    fake = fake_binary(tmp_path / "ffmpeg", f'touch "{started}"\n')
    with pytest.raises(error):
        run_ffmpeg(args, stage="test", path="x.mp4", config={"ffmpeg": str(fake)})
    assert not started.exists()


def test_progress_cannot_share_stdout_with_output() -> None:
    with pytest.raises(ValueError, match="stdout"):
        run_ffmpeg(["-f", "lavfi", "-i", "sine", "-f", "wav", "pipe:1"], stage="t", path=None,
                   progress=lambda seconds: None)


# --------------------------------------------------------------------------------------
# progress and probe
# --------------------------------------------------------------------------------------


def test_progress_reports_increasing_times(tmp_path: Path, caplog) -> None:
    seen: list[float] = []
    # The realtime filter paces the encode (10 s of media in ~0.5 s) so that ffmpeg
    # reports progress several times instead of finishing before its first report.
    args = ["-stats_period", "0.05",
            "-f", "lavfi", "-i", "testsrc=duration=10:size=64x48:rate=10",
            "-f", "lavfi", "-i", "sine=duration=10", "-vf", "realtime=speed=20",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
            file_arg(tmp_path / "ten.mp4")]
    with caplog.at_level(logging.INFO, logger="dubflow.ffmpeg_safe"):
        run_ffmpeg(args, stage="mix", path="ten.mp4", media_duration_s=10, progress=seen.append)
    assert len(seen) >= 3, seen
    assert all(a < b for a, b in itertools.pairwise(seen)), seen
    assert 9.5 <= seen[-1] <= 10.5, seen
    logged = [r.getMessage() for r in caplog.records if " %" in r.getMessage()]
    assert any("100 %" in m for m in logged) and len(logged) <= 10, logged


def test_probe_reports_streams_durations_and_tags(clip: Path) -> None:
    info = probe(clip, stage="extract")
    assert info.path == str(clip) and "mp4" in info.format_name
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    assert [s.codec_type for s in info.streams] == ["video", "audio"]
    video, audio = info.video_streams[0], require_audio(info, "extract")
    assert (video.codec_name, video.width, video.height) == ("h264", 96, 64)
    assert (audio.codec_name, audio.channels, audio.sample_rate) == ("aac", 1, 44100)
    assert audio.language == "eng" and audio.is_default
    assert video.language == "und"  # as written: mp4 tags every stream
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)
    assert info.subtitle_streams == []


def test_probe_mkv_subtitles_titles_and_languages(tmp_path: Path, clip: Path) -> None:
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nOlá\n", encoding="utf-8")
    mkv = tmp_path / "full.mkv"
    run_ffmpeg(["-i", file_arg(clip), "-i", file_arg(srt), "-map", "0", "-map", "1",
                "-c", "copy", "-c:s", "srt", "-metadata:s:a:0", "title=Original",
                "-metadata:s:s:0", "language=por", file_arg(mkv)], stage="test-setup", path=mkv)
    info = probe(mkv, stage="mux")
    assert "matroska" in info.format_name
    assert [s.codec_type for s in info.streams] == ["video", "audio", "subtitle"]
    audio = info.audio_streams[0]
    assert (audio.language, audio.title) == ("eng", "Original")
    assert [(s.language, s.codec_name) for s in info.subtitle_streams] == [("por", "subrip")]
    # Matroska keeps a stream's duration only in its DURATION tag, which probe parses.
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)


def test_cover_art_is_not_a_video_stream(tmp_path: Path, clip: Path) -> None:
    cover = tmp_path / "cover.png"
    run_ffmpeg(["-f", "lavfi", "-i", "color=red:size=32x32", "-frames:v", "1", file_arg(cover)],
               stage="test-setup", path=cover)
    with_cover = tmp_path / "cover.mp4"
    run_ffmpeg(["-i", file_arg(clip), "-i", file_arg(cover), "-map", "0", "-map", "1",
                "-c", "copy", "-disposition:v:1", "attached_pic", file_arg(with_cover)],
               stage="test-setup", path=with_cover)
    info = probe(with_cover, stage="mux")
    assert [s.is_attached_pic for s in info.streams] == [False, False, True]
    assert [s.index for s in info.video_streams] == [0]
