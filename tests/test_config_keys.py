"""Every config key the code reads is defined by the schema, and no code repeats a default.

The schema (workflow/schemas/config.schema.yaml) is the one place for defaults and ranges.
A module that reads a key the schema does not define would get a KeyError only on the
code path that reads it (or, with ``.get``, silently its own default); a
``.get("key", default)`` on a validated section is a second copy of a default that can
drift from the schema's (mix.py once said separation "none" where the schema said
spleeter). Both are found here by reading the code, not by running it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
SOURCES = sorted([*(ROOT / "workflow" / "scripts").glob("*.py"),
                  *(ROOT / "workflow" / "scripts" / "dubflow").glob("*.py"),
                  *(ROOT / "tools").glob("*.py")])
RULES = sorted([*(ROOT / "workflow" / "rules").glob("*.smk"), ROOT / "workflow" / "Snakefile"])

# Names that hold a config section, by the convention the stages follow (the rule passes
# params.<section> and the function's parameter has the section's name).
SECTIONS = ("asr", "diarization", "subtitles", "translation", "tts", "mix", "ffmpeg", "mux")
ALIASES = {"coqui": ("tts", "coqui"), "condense": ("translation", "condense")}
# Names that hold the whole (or one video's) config.
WHOLE = ("config", "merged")
# Where a name holds a section under another name, or (None) is no config at all.
FILE_ALIASES = {
    "diarize.py": {"settings": ("diarization",)},
    "diarize_models.py": {"settings": ("diarization",)},
    "translate.py": {"settings": ("translation", "condense"),
                     "config": None},  # a model folder's config.json
    "tts_backends.py": {"config": None},  # a voice's .onnx.json
    "report.py": {"translation": None},  # a translation.json document
    "qa_data.py": {"translation": None},
}
# Keys the code adds to a section itself (documented where they are added).
ADDED = {("translation", "condense", "speed_boost")}  # translate.run: tts.max_speed_boost


def base_path(node: ast.AST, aliases: dict) -> tuple[str, ...] | None:
    """The config path a name or call stands for: ('mix',) for ``mix``, () for ``config``."""
    if isinstance(node, ast.Name):
        if node.id in aliases:
            return aliases[node.id]  # None: not config in this file
        if node.id in SECTIONS:
            return (node.id,)
        if node.id in ALIASES:
            return ALIASES[node.id]
        if node.id in WHOLE:
            return ()
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "settings_for":
        return ()
    return None


def key_path(node: ast.AST, aliases: dict) -> tuple[str, ...] | None:
    """The config path of ``mix["a"]["b"]`` or ``mix.get("a")``: ('mix', 'a', 'b')."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
            and isinstance(node.slice.value, str):
        inner = key_path(node.value, aliases)
        return None if inner is None else (*inner, node.slice.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "get" and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        inner = key_path(node.func.value, aliases)
        return None if inner is None else (*inner, node.args[0].value)
    return base_path(node, aliases)


def defined(path: tuple[str, ...]) -> bool:
    """The schema defines ``path`` (keys below a free-form mapping are data, not config)."""
    if path in ADDED:
        return True
    node = SCHEMA
    for key in path:
        properties = node.get("properties")
        if properties is None:
            return True  # e.g. tts.voices.<lang>, translation.models.<pair>
        if key not in properties:
            return False
        node = properties[key]
    return True


def python_reads(path: Path) -> list[tuple[int, tuple[str, ...], bool]]:
    """(line, config path, has a default of its own) of each config read in a module:
    ``.get("key", default)`` and ``section.get("key") or <constant or CONSTANT>`` carry one."""
    aliases = FILE_ALIASES.get(path.name, {})
    tree = ast.parse(path.read_text(encoding="utf-8"))
    or_default = {id(node.values[0]) for node in ast.walk(tree)
                  if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or)
                  and any(isinstance(v, ast.Constant) and v.value is not None
                          or isinstance(v, ast.Name) and v.id.isupper()  # a module constant
                          for v in node.values[1:])}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Subscript, ast.Call)):
            continue
        keys = key_path(node, aliases)
        if keys:
            is_get = isinstance(node, ast.Call)
            default = is_get and len(node.args) + len(node.keywords) > 1
            found.append((node.lineno, keys, default or id(node) in or_default))
    return found


RULE_READ = re.compile(r"""(?:config|settings_for\([^()]*\))((?:\[\s*["']\w+["']\s*\])+)"""
                       r"""(?:\.get\(\s*["'](\w+)["'](\s*,)?)?""")


def rule_reads(path: Path) -> list[tuple[int, tuple[str, ...], bool]]:
    """The same for Snakemake files (not Python), by pattern: config["a"]["b"]...."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for match in RULE_READ.finditer(line):
            keys = tuple(re.findall(r"""["'](\w+)["']""", match.group(1)))
            if match.group(2):
                keys += (match.group(2),)
            found.append((number, keys, bool(match.group(3))))
    return found


def all_reads() -> list[tuple[str, int, tuple[str, ...], bool]]:
    reads = [(p, *r) for p in SOURCES for r in python_reads(p)]
    reads += [(p, *r) for p in RULES for r in rule_reads(p)]
    return [(str(p.relative_to(ROOT)), line, keys, default) for p, line, keys, default in reads]


def test_the_scan_finds_the_reads_it_must_check():
    """Guard against a scan that checks nothing: known reads of each kind are found."""
    reads = {(file, keys) for file, _, keys, _ in all_reads()}
    assert ("workflow/scripts/dubflow/mix_settings.py", ("mix", "loudness")) in reads
    assert ("workflow/scripts/translate.py", ("translation", "beam_size")) in reads
    assert ("workflow/scripts/translate.py", ("translation", "condense", "enabled")) in reads
    assert ("workflow/scripts/speaker_ids.py", ("diarization", "match_threshold")) in reads
    assert ("workflow/rules/diarize.smk", ("diarization", "series")) in reads
    assert ("workflow/rules/mix.smk", ("mix",)) in reads
    assert ("workflow/rules/separate.smk", ("mix", "separation")) in reads


def test_every_key_read_is_defined_by_the_schema():
    unknown = [f"{file}:{line} reads {'.'.join(keys)}"
               for file, line, keys, _ in all_reads() if not defined(keys)]
    assert unknown == [], "config keys the schema does not define:\n" + "\n".join(unknown)


def test_no_code_repeats_a_default():
    repeated = [f"{file}:{line} reads {'.'.join(keys)} with a default of its own"
                for file, line, keys, default in all_reads()
                if default]
    assert repeated == [], ("the schema holds every default; index the validated "
                            "section instead:\n" + "\n".join(repeated))


@pytest.mark.parametrize("code, expected", [
    ('mix["no_such_key"]', "mix.no_such_key"),
    ('tts.get("coqui", {}).get("model")', "tts.coqui.model"),
    ('config["mix"].get("sepration")', "mix.sepration"),
    ('settings_for(wc.name)["asr"]["modle"]', "asr.modle"),
])
def test_a_key_the_schema_lacks_is_reported(tmp_path, code, expected):
    """The check fails on a misspelt key (it is not vacuous)."""
    module = tmp_path / "stage.py"
    module.write_text(f"def f(mix, tts, config, wc):\n    return {code}\n")
    keys = [keys for _, keys, _ in python_reads(module)]
    assert tuple(expected.split(".")) in keys and not defined(tuple(expected.split(".")))


@pytest.mark.parametrize("code, default", [
    ('translation.get("beam_size", 4)', True),
    ('float(tts.get("speed") or 1.0)', True),
    ('diarization.get("speaker_db") or DEFAULT_FOLDER', True),
    ('translation["beam_size"]', False),
    ('translation["glossary"].get(pair)', False),
])
def test_a_repeated_default_is_reported(tmp_path, code, default):
    module = tmp_path / "stage.py"
    module.write_text(f"def f(translation, tts, pair, diarization):\n    return {code}\n")
    assert any(found for _, _, found in python_reads(module)) is default
