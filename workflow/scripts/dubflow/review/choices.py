"""A video's voice choices made in review: ``edits/<name>.voices.yaml``.

The file maps ``{lang: {speaker: voice spec}}`` and is merged into that video's
``tts.voices`` by ``settings_for`` in rules/common.smk, so a choice is an input of the
synthesize rule like any config key, and re-voices that speaker's lines only (the other
lines come from the per-line cache). It is read by the workflow and written by the app.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from dubflow.atomic import write_text
from dubflow.errors import InputError

LANGUAGE = re.compile(r"^[a-z]{2,3}$")
SPEAKER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def voices_path(edits_dir: str | Path, name: str) -> Path:
    return Path(edits_dir) / f"{name}.voices.yaml"


def read_choices(path: str | Path) -> dict[str, dict[str, str]]:
    """The file's ``{lang: {speaker: spec}}``; {} when it does not exist.

    A hand-edited file with the wrong shape stops the run with one sentence naming it,
    instead of a traceback from deep inside the synthesize stage.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InputError(f"the voice choices file {path} cannot be read ({_first_line(error)}); "
                         f"fix it or delete it to use the configured voices") from None
    if not isinstance(data, dict):
        raise InputError(f"the voice choices file {path} must map languages to "
                         f"{{speaker: voice}} tables, like 'pt: {{SPEAKER_00: kokoro:jm_kumo}}'")
    choices: dict[str, dict[str, str]] = {}
    for lang, table in data.items():
        if not isinstance(lang, str) or not LANGUAGE.match(lang) or not isinstance(table, dict):
            raise InputError(f"the voice choices file {path} has an entry {lang!r} that is not "
                             f"a language code with a {{speaker: voice}} table; fix or delete it")
        for speaker, spec in table.items():
            if not SPEAKER.match(str(speaker)) or not isinstance(spec, str) or not spec.strip():
                raise InputError(f"the voice choices file {path} gives speaker {speaker!r} of "
                                 f"{lang} the voice {spec!r}; use a speaker id and a voice spec "
                                 f"like kokoro:jm_kumo or espeak:pt-br+f3")
        choices[lang] = {str(speaker): spec.strip() for speaker, spec in table.items()}
    return choices


def merge_voices(settings: dict, choices: dict[str, dict[str, str]]) -> dict:
    """``settings`` (one video's config) with the choices laid over ``tts.voices``."""
    if not choices:
        return settings
    merged = copy.deepcopy(settings)
    voices = merged["tts"]["voices"]  # the schema's default is {}
    for lang, table in choices.items():
        voices[lang] = {**voices.get(lang, {}), **table}
    return merged


def write_choices(path: str | Path, changes: dict[str, dict[str, str]]) -> None:
    """Lay ``changes`` over the file's choices and write it atomically."""
    choices = read_choices(path)
    for lang, table in changes.items():
        choices.setdefault(lang, {}).update(table)
    text = ("# voice choices made in the review app (tools/review.py): "
            "{language: {speaker: voice spec}}\n")
    text += yaml.safe_dump(choices, sort_keys=True, allow_unicode=True)
    write_text(path, text)


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
