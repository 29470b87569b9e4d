"""The README's cluster command on a SLURM cluster *with* an accounting database
(`make test-cluster-accounting`; root, Debian's slurmdbd and mariadb-server).

Most production clusters run slurmdbd. The shipped profile polls squeue, which must work
there too, and the plugin's own default, sacct, must work once accounting answers (it is
the case without accounting that hangs, tests/test_cluster.py). Not part of CI's
`make test-cluster`: the database adds minutes and what it proves does not change between
commits unless the profile's status settings do.
"""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from test_cluster import STAGES, check_mkv, run_on_cluster, summary
from test_workflow import ROOT, make_workspace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("DUBFLOW_TEST_CLUSTER_ACCOUNTING") != "1",
                       reason="starts MariaDB, slurmdbd and SLURM as root: "
                              "run by `make test-cluster-accounting`"),
]

import slurm_node  # noqa: E402  (tests/slurm_node.py)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = slurm_node.missing_tools(accounting=True)
    if missing:
        pytest.fail(f"make test-cluster-accounting needs Debian's slurm-wlm, slurmdbd, munge and "
                    f"mariadb-server ({', '.join(missing)} missing)")
    node = slurm_node.start(tmp_path_factory.mktemp("slurmdbd"), accounting=True)
    yield node
    node.stop()


def sacct_states(node, since: str = "now-1hour") -> dict[str, list[str]]:
    """Job name → states, as the accounting database recorded them (allocations only)."""
    text = node.run("sacct", "-X", "-n", "-P", "-S", since, "-o", "JobName,State")
    states: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, state = line.split("|", 1)
        states.setdefault(name, []).append(state)
    return states


@pytest.fixture(scope="module")
def built(cluster, tmp_path_factory, speech_video):
    workspace = make_workspace(tmp_path_factory.mktemp("accounting"), {"ep": speech_video[0]},
                               fast=True)
    run = run_on_cluster(cluster, workspace, ROOT / "profiles" / "slurm")
    return workspace, run


def test_the_readme_command_dubs_a_video_with_accounting(built, cluster):
    workspace, run = built
    assert run.returncode == 0, run.stderr[-4000:]
    assert "dubflow: job status from squeue (accounting: slurmdbd" in run.stderr, run.stderr[-3000:]
    check_mkv(workspace / "out" / "ep.mkv")
    assert summary(workspace)["ep"]["status"] == "done"
    # the database saw every stage as a completed job (the plugin names jobs by run id, so
    # count them: one per stage, then subtitles, mux, clips and the page)
    states = [state for per_name in sacct_states(cluster).values() for state in per_name]
    assert states.count("COMPLETED") >= len(STAGES) + 4, states
    assert set(states) == {"COMPLETED"}, states


def test_the_plugins_own_sacct_status_works_once_accounting_answers(built, cluster):
    """The profile without its `slurm-status-command` line: the plugin polls sacct."""
    workspace, first = built
    assert first.returncode == 0
    profile = workspace / "sacct-profile"
    shutil.copytree(ROOT / "profiles" / "slurm", profile)
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    del settings["slurm-status-command"]
    (profile / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    run = run_on_cluster(cluster, workspace, profile, "--forcerun", "synthesize")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "dubflow: job status from sacct (accounting: slurmdbd" in run.stderr, run.stderr[-3000:]
    check_mkv(workspace / "out" / "ep.mkv")
