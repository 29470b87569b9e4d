"""conda envs (for --sdm conda where conda exists) pin what the pip environment runs.

conda cannot run here, so the envs are checked by reading them: every Python pin equals
pyproject.toml's pin and the installed version, Python and ffmpeg are pinned, and every
rule names an env file that exists.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import tomllib

import pytest
import yaml

from conftest import ROOT

ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))


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
    for smk in (ROOT / "rules").glob("*.smk"):
        text = smk.read_text()
        names = re.findall(r"^(?:rule|checkpoint) (\w+):", text, re.M)
        envs = re.findall(r"conda:\n\s+\"\.\./(envs/[\w.]+)\"", text)
        assert len(envs) == len([n for n in names if n != "all"]), smk.name
        for env in envs:
            assert (ROOT / env).is_file(), f"{smk.name}: {env}"
        rules += len(names)
    assert rules >= 9
