"""The SLURM preflight's decisions, from `scontrol show config` / `sinfo` facts (no cluster).

The same checks run against a real single-node SLURM in tests/test_cluster.py.
"""

from __future__ import annotations

import shutil

from dubflow import cluster

NO_ACCOUNTING = {"AccountingStorageType": "accounting_storage/none", "MinJobAge": "300 sec"}


def test_squeue_is_kept_without_accounting_when_finished_jobs_are_remembered():
    assert cluster.status_method("squeue", NO_ACCOUNTING) == ("squeue", "")


def pretend_sacct(monkeypatch, installed: bool) -> None:
    """The decisions below depend on whether sacct is installed; CI machines without SLURM
    have none, so each test says which case it checks instead of taking the machine's."""
    real = shutil.which
    monkeypatch.setattr(cluster.shutil, "which", lambda name: (
        ("/usr/bin/sacct" if installed else None) if name == "sacct" else real(name)))


def test_a_short_min_job_age_without_accounting_would_hang_and_is_refused(monkeypatch):
    pretend_sacct(monkeypatch, installed=True)
    method, problem = cluster.status_method("squeue", {**NO_ACCOUNTING, "MinJobAge": "60 sec"})
    assert method == "sacct"  # what the plugin would fall back to
    assert problem.startswith("this SLURM cluster has no accounting database and forgets "
                              "finished jobs after MinJobAge=60 s")


def test_without_sacct_squeue_stays_and_a_short_min_job_age_is_refused(monkeypatch):
    pretend_sacct(monkeypatch, installed=False)
    method, problem = cluster.status_method("squeue", {**NO_ACCOUNTING, "MinJobAge": "60 sec"})
    assert method == "squeue"
    assert problem.startswith("this SLURM cluster forgets finished jobs after MinJobAge=60 s")


def test_sacct_is_fine_with_an_accounting_database(monkeypatch):
    pretend_sacct(monkeypatch, installed=True)
    conf = {"AccountingStorageType": "accounting_storage/slurmdbd", "MinJobAge": "60"}
    assert cluster.status_method("sacct", conf)[1] == ""


def test_min_job_age_units():
    assert cluster.min_job_age_s("300 sec") == 300
    assert cluster.min_job_age_s("1h") == 3600
    assert cluster.min_job_age_s("n/a") is None


def test_jobs_larger_than_every_node_are_refused_with_the_fix():
    limits = {"cpu": (2, 12000), "": (2, 12000), "big": (64, 512000)}
    jobs = [("diarize", "cpu", 4, 4000), ("diarize", "cpu", 4, 4000),
            ("transcribe", "big", 8, 8000), ("mix", "", 1, 20000)]
    problems = cluster.oversized_jobs(jobs, limits)
    assert problems == [
        "rule diarize asks for 4 CPUs but the largest node of partition cpu has 2; run with "
        "--cores 2 (it caps every job's threads) or lower set-threads in profiles/slurm",
        "rule mix asks for 20000 MB but the largest node of the default partition has 12000 MB; "
        "lower its mem_mb in profiles/slurm (set-resources)",
    ]


def test_the_kill_reason_comes_from_slurmstepds_line():
    assert cluster.kill_from_log("slurmstepd-n1: error: *** JOB 9 ON n1 CANCELLED AT "
                                 "2026-12-03T10:12:40 DUE TO TIME LIMIT ***") == ("time limit", "")
    assert cluster.kill_from_log("all fine\n") == ("", "")
