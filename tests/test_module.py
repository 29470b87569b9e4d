"""The workflow used as a Snakemake `module` from another project, as snakedeploy sets it up.

A project folder holds only its own Snakefile, config and videos; the rules, scripts,
schemas and envs all come from this repository through `module ... snakefile:`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.model  # starts Snakemake (parses the workflow, runs preflight)

PROJECT_SNAKEFILE = """\
configfile: "config/config.yaml"


module dubflow:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from dubflow as dubflow_*
"""


def make_project(path: Path, video: Path) -> Path:
    (path / "in").mkdir(parents=True)
    (path / "config").mkdir()
    shutil.copy(video, path / "in" / "ep01.mp4")
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for section, values in yaml.safe_load(
            (ROOT / ".test" / "config" / "config.yaml").read_text()).items():
        config[section].update(values)
    config["asr"]["model"] = str(ROOT / config["asr"]["model"])
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "Snakefile").write_text(
        PROJECT_SNAKEFILE.format(snakefile=ROOT / "workflow" / "Snakefile"))
    return path


def test_workflow_runs_as_a_module_of_another_project(tmp_path, silent_video):
    project = make_project(tmp_path / "project", silent_video)
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "out/ep01.mkv"],
        cwd=project, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    log = run.stdout + run.stderr
    for rule in ("extract", "diarize", "transcribe", "translate", "synthesize", "mix", "mux"):
        assert f"dubflow_{rule}:" in log, (rule, log[-2000:])
    # The scripts, schemas and envs came from this repository; the outputs are the project's.
    assert (project / "out" / "ep01.mkv").stat().st_size > 0
    assert not (ROOT / "out" / "ep01.mkv").exists()
