"""Secrets never reach logs; the batch summary explains each video; preflight refusals."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import pytest
import yaml

from dubflow import batch, stage_record
from dubflow import ffmpeg_needs
from dubflow import ffmpeg_safe
from dubflow import redaction
from dubflow import settings
from dubflow.errors import ConfigError, FFmpegError

TOKEN = "hf_sEcReT0123456789abcdef"


def test_token_from_the_environment_is_redacted_in_logs_and_tracebacks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    log_path = tmp_path / "stage.log"
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.addFilter(redaction.RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("calling the hub with token=%s", TOKEN)
        try:
            raise RuntimeError(f"401 for token {TOKEN}")
        except RuntimeError:
            logger.exception("hub failed")
    finally:
        handler.close()
        logger.removeHandler(handler)
    text = log_path.read_text()
    assert TOKEN not in text
    assert text.count(redaction.MASK) >= 2  # the message and the exception's own line


def test_masked_config_hides_secret_keys_and_values(monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "k-very-secret-value")
    config = {"diarization": {"token_env": "HF_TOKEN", "pipeline": "https://x/k-very-secret-value"},
              "hub_token": "pasted-by-mistake", "asr": {"beam_size": 5}}
    masked = redaction.masked_config(config)
    assert masked["hub_token"] == redaction.MASK
    assert masked["diarization"]["token_env"] == "HF_TOKEN"  # a name, not a secret
    assert "k-very-secret-value" not in masked["diarization"]["pipeline"]
    assert masked["asr"]["beam_size"] == 5
    assert config["hub_token"] == "pasted-by-mistake"  # the original is untouched


def test_effective_config_is_written_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    batch.write_effective_config({"diarization": {"pipeline": f"x{TOKEN}"}}, tmp_path / "c.yaml")
    text = (tmp_path / "c.yaml").read_text()
    assert TOKEN not in text and yaml.safe_load(text)["diarization"]["pipeline"] == "x***"


def stage_run(root: Path, name: str, stage: str, status: str, reason: str = "",
              slurm_job_id: str = "") -> Path:
    """A stage's status record as the rule runner writes it (stage_record)."""
    log = root / "logs" / name / f"{stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    record = stage_record.started(stage, name, log)
    record.slurm_job_id = slurm_job_id
    if status != "running":
        stage_record.finished(record, status, reason)
    else:
        stage_record.write(record)
    return log


def test_batch_summary_has_one_line_per_video_with_reason_and_log(tmp_path):
    (tmp_path / "out").mkdir()
    stage_run(tmp_path, "good", "mux", "done")
    (tmp_path / "out" / "good.mkv").write_bytes(b"x")
    bad = stage_run(tmp_path, "bad", "extract", "failed",
                    "in/bad.mp4 is not a media file ffmpeg can read (stage extract); "
                    "check the file or re-export it")
    stage_run(tmp_path, "bad", "mix", "done")  # a later stage that did finish is no excuse
    rows = batch.summarise(["bad", "good", "later"], tmp_path / "out", tmp_path / "logs")
    by_name = {row.name: row for row in rows}
    assert by_name["good"].status == "done"
    assert by_name["bad"].status == "failed" and by_name["bad"].log == str(bad)
    assert by_name["bad"].reason.startswith("in/bad.mp4 is not a media file")
    assert by_name["later"].status == "not built"
    batch.write_summary(rows, tmp_path / "summary.tsv")
    table = (tmp_path / "summary.tsv").read_text().splitlines()
    assert table[0] == "name\tstatus\treason\tlog" and len(table) == 4
    text = batch.format_summary(rows)
    assert text.splitlines()[0] == "dubflow batch: 1 done, 1 failed, 1 not built"


def test_an_old_failure_is_forgotten_once_the_video_is_built(tmp_path):
    stage_run(tmp_path, "ep", "mix", "failed", "disk full")
    time.sleep(0.01)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ep.mkv").write_bytes(b"x")
    assert batch.video_status("ep", tmp_path / "out", tmp_path / "logs").status == "done"


def test_a_stage_killed_from_outside_counts_as_failed(tmp_path):
    """SIGKILL (the OOM killer) leaves the record at running: that is a failure too."""
    log = stage_run(tmp_path, "ep", "diarize", "running")
    row = batch.video_status("ep", tmp_path / "out", tmp_path / "logs", tmp_path / "none")
    assert row.status == "failed" and row.log == str(log)
    assert row.reason.startswith("stage diarize was killed before it finished")


# slurmstepd's own lines, as SLURM 22.05 wrote them into job logs on this machine's test cluster
SLURMSTEPD = {
    "out of memory": "slurmstepd-vm: error: StepId=7.batch exceeded memory limit "
                     "(644714496 > 209715200), being killed\n"
                     "slurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026-12-03T10:11:14 ***\n"
                     "slurmstepd-vm: error: Exceeded job memory limit\n",
    "time limit": "slurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026-12-03T10:12:40 "
                  "DUE TO TIME LIMIT ***\n",
    "cancelled": "slurmstepd-vm: error: *** JOB 7 ON vm CANCELLED AT 2026-12-03T10:11:16 ***\n",
}


@pytest.mark.parametrize("reason", sorted(SLURMSTEPD))
def test_the_batch_summary_names_the_schedulers_reason(tmp_path, reason):
    slurm_logs = tmp_path / ".snakemake" / "slurm_logs"
    job_log = slurm_logs / "rule_diarize" / "ep" / "7.log"
    job_log.parent.mkdir(parents=True)
    job_log.write_text("host vm\n" + SLURMSTEPD[reason])
    stage_run(tmp_path, "ep", "diarize", "running", slurm_job_id="7")
    row = batch.video_status("ep", tmp_path / "out", tmp_path / "logs", slurm_logs)
    assert row.status == "failed" and row.log == str(job_log)
    assert row.reason.startswith(f"stage diarize was killed by SLURM: {reason} (job 7")
    if reason == "out of memory":
        assert "used 615 MB of its 200 MB" in row.reason


def fake_ffmpeg(tmp_path: Path, filters: list[str]) -> str:
    """An ffmpeg 6.1 that knows only some filters (without options), like a minimal build."""
    script = tmp_path / "ffmpeg"
    known = " ".join(f"filter={name}" for name in filters)
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do\n'
        '  [ "$a" = -version ] && echo "ffmpeg version 6.1.1 Copyright" && exit 0\n'
        f'  case " {known} " in *" $a "*) echo "Filter $a"; exit 0;; esac\n'
        "done\nexit 0\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_preflight_names_missing_ffmpeg_filters(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    present = [name for name in ffmpeg_needs.FILTERS if name != "ebur128"]
    binary = fake_ffmpeg(tmp_path, present)
    config = {"ffmpeg": binary, "ffprobe": "auto", "timeout_per_media_s": 2.0,
              "min_timeout_s": 10, "retries": 0}
    with pytest.raises(FFmpegError) as error:
        ffmpeg_safe.check_capabilities(config)
    sentence = str(error.value)
    assert sentence.startswith(f"The ffmpeg at {binary} (version 6.1.1) lacks ")
    assert "the ebur128 filter (stage mix)" in sentence
    assert "the amultiply filter (stage mix)" not in sentence
    assert "set ffmpeg.ffmpeg: auto to use the pinned ffmpeg" in sentence


def test_unwritable_output_folder_is_refused_before_any_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").write_text("a file where the output folder should be")
    with pytest.raises(ConfigError, match="out cannot be written"):
        settings.check_writable(("out", "work"))
    settings.check_writable(("work", "logs"))  # folders that do not exist yet are fine


@pytest.mark.model
def test_verify_runtime_lists_what_is_wrong_and_exits_non_zero(tmp_path, capsys):
    """`make verify` on a machine whose ASR model folder is missing."""
    import verify

    broken = tmp_path / "whisper-missing"
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"asr": {"model": str(broken)}}))
    status = verify.main(["--configfile", str(extra)])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL  asr" in out and "make setup" in out and str(broken) in out
    for healthy in ("python packages", "ffmpeg", "translation (pt)", "voice (pt)"):
        assert f"ok    {healthy}" in out, out
    assert out.rstrip().splitlines()[-1].startswith("  - asr:")


def test_a_slurm_job_that_died_before_its_stage_started_is_counted(tmp_path):
    """No stage record (the job never reached dubflow's code): its leftover SLURM log counts."""
    slurm_logs = tmp_path / "slurm_logs"
    job_log = slurm_logs / "rule_transcribe" / "ep_pt" / "5.log"  # wildcards name=ep, lang=pt
    job_log.parent.mkdir(parents=True)
    job_log.write_text(SLURMSTEPD["out of memory"])
    other = slurm_logs / "rule_transcribe" / "ep_x_pt" / "6.log"  # video "ep_x", not "ep"
    other.parent.mkdir(parents=True)
    other.write_text(SLURMSTEPD["cancelled"])
    row = batch.video_status("ep", tmp_path / "out", tmp_path / "logs", slurm_logs)
    assert row.status == "failed" and row.log == str(job_log)
    assert row.reason.startswith("the SLURM job of transcribe killed by SLURM: out of memory")
    time.sleep(0.01)
    stage_run(tmp_path, "ep", "transcribe", "done", slurm_job_id="7")  # the retry succeeded
    row = batch.video_status("ep", tmp_path / "out", tmp_path / "logs", slurm_logs)
    assert row.status == "not built", row
