"""The SLURM profile on a real single-node cluster (`make test-cluster`; root, Debian packages).

Three runs of the README's cluster command over two videos, on a cluster without an
accounting database (the case that used to hang):

1. the shipped profile: both videos build; every stage ran as one COMPLETED sbatch job
   with the profile's CPUs, memory and time limit;
2. a copy of the profile gives diarize too little memory (as the README says to change one
   rule), retries off: one diarize is killed for memory, the other scancel'ed while it runs;
   the batch summary names each video, the stage and the scheduler's reason;
3. the same command again, retries on: diarize is killed for memory, resubmitted with twice
   as much, and the run resumes (extract does not run again).
Before that, a run whose jobs ask for more CPUs than the node has is refused at preflight.

The only addition to the README's command is `--slurm-init-seconds-before-status-checks`:
the plugin's first status poll waits 40 s, which would make this test several minutes
longer without changing what it checks.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import ROOT, make_workspace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("DUBFLOW_TEST_CLUSTER") != "1",
                       reason="starts SLURM daemons as root: run by `make test-cluster`"),
]

import slurm_node  # noqa: E402  (tests/slurm_node.py)

VIDEOS = ("ep1", "ep2")
STAGES = ("extract", "diarize", "transcribe", "translate", "synthesize", "mix")
FINISH = ("subtitles", "mux", "report_clips", "report")  # small jobs, default-sized


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = slurm_node.missing_tools()
    if missing:
        pytest.fail(f"make test-cluster needs Debian's slurm-wlm and munge ({', '.join(missing)} "
                    f"missing): apt-get install slurm-wlm munge")
    # jobs stay visible to squeue for 10 minutes, so each run's jobs can be checked after it
    node = slurm_node.start(tmp_path_factory.mktemp("slurm"), min_job_age=600,
                            cpus=2 * slurm_node.node_hardware()[1])
    yield node
    node.stop()


def small_diarize_profile(workspace: Path, diarize_mb: int) -> Path:
    """profiles/slurm, copied and edited for one rule as the README says (a copy, not a flag)."""
    profile = workspace / "small-diarize"
    shutil.copytree(ROOT / "profiles" / "slurm", profile, dirs_exist_ok=True)
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings["set-resources"]["diarize"]["mem_mb"] = f"{diarize_mb} * attempt"
    (profile / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return profile


def run_on_cluster(node, workspace: Path, profile: Path, *extra: str, cores: int = 0,
                   background: bool = False):
    argv = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
            "--configfile", "config.yaml", "--workflow-profile", str(profile),
            "--cores", str(cores or 2), "-j100", "--slurm-init-seconds-before-status-checks", "5",
            *extra]
    env = {**node.env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if background:
        return subprocess.Popen(argv, cwd=workspace, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True,
                          timeout=900)


def jobs(node) -> list[dict]:
    """Every job slurmctld remembers (MinJobAge 300 s): rule, state and what it was given."""
    text = node.run("squeue", "-h", "--states=all", "-o", "%i|%T|%C|%m|%l|%k")
    rows = []
    for line in text.splitlines():
        job_id, state, cpus, memory, limit, comment = line.split("|", 5)
        rows.append({"id": job_id, "state": state, "cpus": int(cpus), "mem": memory,
                     "limit": limit, "comment": comment})
    return rows


def mb(memory: str) -> int:
    return int(float(memory[:-1]) * 1024) if memory.endswith("G") else int(memory.rstrip("M"))


def summary(workspace: Path) -> dict[str, dict]:
    with open(workspace / "logs" / "batch-summary.tsv") as table:
        return {row["name"]: row for row in csv.DictReader(table, delimiter="\t")}


def check_mkv(path: Path) -> None:
    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True).stdout)["streams"]
    kinds = [stream["codec_type"] for stream in probe]
    assert kinds.count("video") == 1 and kinds.count("audio") == 2, kinds
    assert kinds.count("subtitle") >= 2, kinds
    dub = next(s for s in probe if s["codec_type"] == "audio" and s["disposition"]["default"])
    assert dub["tags"]["language"] == "por"


def test_a_job_larger_than_every_node_is_refused_before_submitting(cluster, tmp_path,
                                                                  speech_video):
    """A job with more threads than the node has CPUs: SLURM would keep it PENDING forever."""
    workspace = make_workspace(tmp_path, {"ep": speech_video[0]}, fast=True)
    too_many = cluster.cpus * 2
    run = run_on_cluster(cluster, workspace, ROOT / "profiles" / "slurm",
                         "--set-threads", f"diarize={too_many}", cores=too_many)
    assert run.returncode != 0
    assert (f"dubflow: rule diarize asks for {too_many} CPUs but the largest node of "
            f"partition cpu has {cluster.cpus}; run with --cores {cluster.cpus}") in run.stderr, \
        run.stderr[-3000:]
    assert not jobs(cluster) and not (workspace / ".snakemake" / "slurm_logs").exists()


@pytest.fixture(scope="module")
def season(cluster, tmp_path_factory, speech_video):
    """Run 1: the README's command with the shipped profile, two videos."""
    video, _ = speech_video
    workspace = make_workspace(tmp_path_factory.mktemp("season"), dict.fromkeys(VIDEOS, video),
                               fast=True)
    started = time.monotonic()
    run = run_on_cluster(cluster, workspace, ROOT / "profiles" / "slurm")
    return workspace, run, jobs(cluster), time.monotonic() - started


def test_both_videos_build_on_slurm_without_accounting(season):
    workspace, run, _, seconds = season
    assert run.returncode == 0, run.stderr[-4000:]
    assert "dubflow: job status from squeue (accounting: none" in run.stderr
    for video in VIDEOS:
        check_mkv(workspace / "out" / f"{video}.mkv")
    assert {row["status"] for row in summary(workspace).values()} == {"done"}
    print(f"\ntwo videos on SLURM in {seconds:.0f} s")


def test_every_stage_ran_as_a_completed_sbatch_job_with_the_profiles_resources(season, cluster):
    _, _, squeue, _ = season
    settings = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    for video in VIDEOS:
        for rule in STAGES:
            mine = [job for job in squeue if job["comment"] == f"rule_{rule}_wildcards_{video}"
                    or job["comment"].startswith(f"rule_{rule}_wildcards_{video}_")]
            assert [job["state"] for job in mine] == ["COMPLETED"], (rule, video, squeue)
            wanted = settings["set-resources"][rule]
            assert mine[0]["cpus"] == min(settings["set-threads"].get(rule, 1), 2)  # --cores 2
            assert mb(mine[0]["mem"]) == eval(wanted["mem_mb"], {"attempt": 1}), mine
            assert mine[0]["limit"] == f"{wanted['runtime'] // 60}:00:00", mine
        for rule in FINISH:  # no job groups (snakemake#4202): each its own sbatch job
            mine = [job for job in squeue if job["comment"].startswith(f"rule_{rule}_wildcards_{video}")]
            assert mine and {job["state"] for job in mine} == {"COMPLETED"}, (rule, video, squeue)
    assert not [job for job in squeue if job["comment"].startswith("group")], squeue


@pytest.fixture(scope="module")
def killed(season, cluster):
    """Run 2: diarize again with too little memory and no retries; one of the two diarize
    jobs is scancel'ed once its stage has started, the other is killed for memory."""
    workspace, first, _, _ = season
    assert first.returncode == 0
    # diarize's own peak (benchmark) is reached at its end and held for about 1.5 s; SLURM
    # polls memory once a second and also counts the job's Snakemake (~150-200 MB). A limit
    # of the peak itself was crossed for only about 2 s, and one CI run missed it. At 0.8 of
    # the peak the job is over its limit for about 6 s, and twice that limit (the retry's)
    # still leaves 200 MB above the job's whole peak.
    peak = max(float(next(csv.DictReader(open(workspace / "benchmarks" / video / "diarize.tsv"),
                                         delimiter="\t"))["max_rss"]) for video in VIDEOS)
    limit = int(0.8 * peak)
    profile = small_diarize_profile(workspace, limit)
    before = {video: (workspace / "work" / video / "audio.wav").stat().st_mtime for video in VIDEOS}
    # as if the season were new: without its mkv and its speaker ids, a video needs every
    # stage from diarize on after a kill (Snakemake does not rebuild missing intermediate
    # files under up-to-date ones: a killed diarize's speakers.local.rttm is one, under the
    # first run's speakers.rttm)
    for video in VIDEOS:
        (workspace / "out" / f"{video}.mkv").unlink()
        (workspace / "work" / video / "speakers.rttm").unlink()
    run = run_on_cluster(cluster, workspace, profile, "--forcerun", "diarize", "--retries", "0",
                         background=True)
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and run.poll() is None:
        for video in VIDEOS:
            record = workspace / "logs" / video / "diarize.status.json"
            if record.is_file():
                state = json.loads(record.read_text())
                if state["status"] == "running" and state["slurm_job_id"] and \
                        state["started"] > before[video]:
                    cluster.run("scancel", state["slurm_job_id"])
                    victim = (video, state["slurm_job_id"])
                    break
        time.sleep(0.2)
    output, _ = run.communicate(timeout=600)
    return workspace, profile, run.returncode, output, victim, before, limit


def test_the_batch_summary_names_the_video_the_stage_and_the_schedulers_reason(killed):
    workspace, _, returncode, output, victim, _, limit = killed
    assert victim, output[-3000:]
    assert returncode != 0
    rows = summary(workspace)
    cancelled, job_id = victim
    oom = next(video for video in VIDEOS if video != cancelled)
    assert rows[oom]["status"] == "failed", rows
    assert rows[oom]["reason"].startswith("stage diarize was killed by SLURM: out of memory (job ")
    assert f"of its {limit} MB" in rows[oom]["reason"], rows[oom]
    assert rows[cancelled]["reason"] == f"stage diarize was killed by SLURM: cancelled (job {job_id})"
    assert rows[cancelled]["log"].endswith(f"/{job_id}.log")
    assert (workspace / rows[cancelled]["log"]).is_file()
    assert "dubflow batch: 0 done, 2 failed, 0 not built" in output
    assert f"  {oom}: failed: stage diarize was killed by SLURM: out of memory" in output


@pytest.fixture(scope="module")
def resumed(killed, cluster):
    """Run 3: the same command again, retries on (the profile's): diarize is killed for memory
    once more, resubmitted with twice as much, and the videos finish."""
    workspace, profile, *_ = killed
    marker = time.time()
    run = run_on_cluster(cluster, workspace, profile)
    return workspace, profile, run, jobs(cluster), marker


def test_a_job_killed_for_memory_is_retried_with_twice_as_much(resumed, killed):
    _, _, run, squeue, _ = resumed
    limit = killed[-1]
    assert run.returncode == 0, run.stderr[-4000:]
    for video in VIDEOS:
        mine = [job for job in squeue if job["comment"] == f"rule_diarize_wildcards_{video}"]
        attempts = [(mb(job["mem"]), job["state"]) for job in mine]
        assert (limit, "FAILED") in attempts and (2 * limit, "COMPLETED") in attempts, attempts


def test_the_same_command_resumes_after_the_kills(resumed, killed):
    workspace, _, run, _, marker = resumed
    before = killed[5]
    assert run.returncode == 0, run.stderr[-4000:]
    for video in VIDEOS:
        check_mkv(workspace / "out" / f"{video}.mkv")
        assert (workspace / "out" / f"{video}.mkv").stat().st_mtime > marker
        # extract did not run again: its output is the first run's
        assert (workspace / "work" / video / "audio.wav").stat().st_mtime == before[video]
    assert {row["status"] for row in summary(workspace).values()} == {"done"}
