"""The shape of the code: helpers never import stages, and nothing imports in a circle.

Stage scripts (workflow/scripts/*.py) are the leaves: Snakemake runs them, they import the
``dubflow`` package. The package never imports a stage, so the config loader that runs at
DAG-build time in Snakemake's own process cannot pull in a stage's heavy imports or side
effects. Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SCRIPTS = ROOT / "workflow" / "scripts"
STAGES = {p.stem for p in SCRIPTS.glob("*.py")}
PACKAGE = {f"dubflow.{p.stem}" for p in (SCRIPTS / "dubflow").glob("*.py") if p.stem != "__init__"}


def imports_of(path: Path) -> set[str]:
    """Every stage or dubflow module that ``path`` imports, at top level or in a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n for n in names if n in STAGES or n in PACKAGE)
    return found


def graph() -> dict[str, set[str]]:
    modules = {name: SCRIPTS / f"{name}.py" for name in STAGES}
    modules |= {name: SCRIPTS / "dubflow" / f"{name.split('.')[1]}.py" for name in PACKAGE}
    return {name: imports_of(path) - {name} for name, path in modules.items()}


def test_the_package_never_imports_a_stage() -> None:
    offenders = {m: sorted(deps & STAGES) for m, deps in graph().items()
                 if m in PACKAGE and deps & STAGES}
    assert not offenders, offenders


def test_there_are_no_import_cycles() -> None:
    edges = graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for dep in sorted(edges.get(node, ())):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [start])
    assert not cycles, cycles


def test_the_graph_sees_the_imports_it_must() -> None:
    # Guards the test above against an empty graph: these edges are real.
    edges = graph()
    assert "dubflow.diarize_models" in edges["dubflow.settings"]
    assert "dubflow.mt_models" in edges["translate"]
    assert "dubflow.records" in edges["dubflow.speaker_split"]


def test_the_config_loader_loads_no_stage_and_leaves_the_environment_alone() -> None:
    # What common.smk does at DAG-build time, in a fresh interpreter.
    code = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "from dubflow import settings, diarize_models, mt_models, voices, ffmpeg_safe\n"
        "diarize_models.preflight({})\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(json.dumps({'modules': sorted(sys.modules), 'changed': changed}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SCRIPTS))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.splitlines()[-1])
    assert not set(seen["modules"]) & STAGES, set(seen["modules"]) & STAGES
    heavy = {"torch", "onnxruntime", "faster_whisper", "ctranslate2", "pyannote"}
    assert not set(seen["modules"]) & heavy
    assert seen["changed"] == []
