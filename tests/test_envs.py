"""conda envs (for --sdm conda where conda exists) pin what the pip environment runs.

conda cannot run here, so the envs are checked by reading them: every Python pin equals
pyproject.toml's pin and the installed version, Python and ffmpeg are pinned, and every
rule names an env file that exists.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

WORKFLOW = ROOT / "workflow"
ENV_FILES = sorted((WORKFLOW / "envs").glob("*.yaml"))


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {name.lower(): version for name, _, version in
            (r.partition("==") for r in requirements) if version}


def env_pins(path) -> tuple[dict[str, str], dict[str, str]]:
    """(conda pins, pip pins) of one env file."""
    env = yaml.safe_load(path.read_text())
    conda, pip = {}, {}
    for dependency in env["dependencies"]:
        if isinstance(dependency, dict):
            for requirement in dependency.get("pip", []):
                if requirement.startswith("--"):
                    continue
                name, sep, version = requirement.partition("==")
                assert sep, f"{path.name}: pip requirement {requirement!r} is not pinned with =="
                pip[name.lower()] = version
        elif dependency != "pip":
            name, _, version = dependency.partition(" =")
            conda[name] = version
    return conda, pip


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_match_the_pip_environment(path):
    conda, pip = env_pins(path)
    assert conda.get("python") == "3.11"
    pins = pyproject_pins()
    for name, version in pip.items():
        assert pins.get(name) == version, f"{path.name}: {name}=={version}, pyproject has {pins.get(name)}"
        installed = metadata.version(name).split("+")[0]
        assert installed == version, f"{path.name}: {name}=={version} but {installed} is installed"


def test_media_envs_pin_ffmpeg():
    for path in ENV_FILES:
        conda, _ = env_pins(path)
        if path.stem != "report":
            assert re.fullmatch(r"\d+\.\d+", conda.get("ffmpeg", "")), path.name


def test_every_rule_names_an_env_file_that_exists():
    rules = 0
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        names = re.findall(r"^(?:rule|checkpoint) (\w+):", text, re.M)
        envs = re.findall(r"conda:\n\s+\"\.\./(envs/[\w.]+)\"", text)
        assert len(envs) == len([n for n in names if n != "all"]), smk.name
        for env in envs:
            assert (WORKFLOW / env).is_file(), f"{smk.name}: {env}"
        rules += len(names)
    assert rules >= 9


# Modules a script may import that its env need not list, each with the reason.
PROVIDED = {
    "snakemake": "the running Snakemake puts its own package on the script's sys.path",
    "TTS": "Coqui voices: the optional [coqui] extra, imported only when configured",
}
# Modules one env need not list: imported only on an optional path, with the reason.
OPTIONAL_IN_ENV = {
    ("envs/tts.yaml", "torch"): "only Coqui voices import it, and the [coqui] extra brings it",
    ("envs/tts.yaml", "onnx"): "only make setup's install_model imports it",
}


def rule_scripts() -> list[tuple[str, str, str]]:
    """(rule, env file, script file) for every rule, read from the rule files."""
    found = []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        blocks = re.split(r"^(?=(?:rule|checkpoint) )", smk.read_text(), flags=re.M)
        for block in blocks:
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)
            env = re.search(r"conda:\n\s+\"\.\./(envs/[\w.]+)\"", block)
            script = re.search(r"script:\n\s+\"\.\./(scripts/[\w.]+)\"", block)
            if name and env and script:
                found.append((name.group(1), env.group(1), script.group(1)))
    return found


def imported_modules(script: str) -> set[str]:
    """Top-level names of every module the script imports, following imports of the stage
    scripts and the dubflow package in workflow/scripts/ (at any depth, and inside
    functions: they run in the job too)."""
    import ast
    import sys

    scripts = WORKFLOW / "scripts"
    local = {p.stem: p for p in scripts.glob("*.py")}
    local |= {f"dubflow.{p.stem}": p for p in (scripts / "dubflow").glob("*.py")}
    seen, todo, external = set(), [Path(script).stem], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for node in ast.walk(ast.parse(local[module].read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name in local:
                    todo.append(name)
                elif name.split(".")[0] not in {"dubflow", *local}:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "__future__":
                        external.add(top)
    return external


@pytest.mark.parametrize("rule, env, script", rule_scripts(), ids=lambda v: str(v))
def test_each_rule_env_lists_every_package_its_script_imports(rule, env, script):
    """conda cannot build the envs here, so this is what stands between an env file and a
    job that dies on ModuleNotFoundError on a cluster (speech.yaml once lacked pycountry)."""
    distributions = metadata.packages_distributions()
    conda, pip = env_pins(WORKFLOW / env)
    installed = installed_with(set(pip)) | {normal(name) for name in conda}
    missing = []
    optional = {module for (file, module) in OPTIONAL_IN_ENV if file == env}
    for module in sorted(imported_modules(script) - set(PROVIDED) - optional):
        owners = {normal(d) for d in distributions.get(module, [])}
        assert owners, f"{script} imports {module}, which no installed package provides"
        if not owners & installed:
            missing.append(f"{module} (package {' or '.join(sorted(owners))})")
    assert not missing, f"rule {rule}: {env} lacks {', '.join(missing)}, imported by {script}"


def normal(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_with(listed: set[str]) -> set[str]:
    """The listed packages and everything pip installs with them (their requirements,
    recursively, without extras): what the built env really holds."""
    todo, seen = [normal(name) for name in listed], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            if "extra ==" in requirement:
                continue
            todo.append(normal(re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)))
    return seen
