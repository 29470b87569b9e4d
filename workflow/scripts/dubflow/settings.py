"""The one config loader: validation, the samples sheet, per-video settings, preflight.

``rules/common.smk`` calls these at DAG-build time, so a bad config value, a broken sheet
or a missing model stops the run before any job starts, with one sentence naming the key
or file and the fix (instead of jsonschema's multi-page dump or a failure an hour in).
"""

from __future__ import annotations

import copy
import os
import csv
import io
import re
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dubflow import config_schema
from dubflow.config_schema import describe_validation_error
from dubflow.errors import ConfigError, InputError
from dubflow.whisper_model import check_whisper_model

# Sheet column -> the config key it overrides for that video.
SHEET_OVERRIDES: dict[str, tuple[str, ...]] = {
    "source_language": ("source_language",),
    "target_languages": ("target_languages",),
    "speakers": ("diarization", "num_speakers"),
    "min_speakers": ("diarization", "min_speakers"),
    "max_speakers": ("diarization", "max_speakers"),
    "series": ("diarization", "series"),
    "audio_stream": ("audio_stream",),
}
INTEGER_COLUMNS = ("speakers", "min_speakers", "max_speakers")
SHEET_COLUMNS = ("name", "path", *SHEET_OVERRIDES)
# What a samples-sheet name may hold besides letters, marks and digits of any script.
SAFE_NAME_PUNCTUATION = " ._-'"
SAFE_NAME_RULE = (
    "it names the outputs (out/<name>.mkv, logs/<name>/), so it may hold only letters, "
    "digits, spaces and . _ - ' and must not start with - or . (the file in the path "
    "column may have any name)"
)
# A Hugging Face access token: "hf_" and 30+ letters/digits (34 today).
HF_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{30,}")
# Secret values from the environment this long are looked for inside config strings too.
MIN_EMBEDDED_SECRET_LEN = 16


@dataclass(frozen=True)
class Sample:
    """One video to dub: where it is and what it overrides of the global config."""

    name: str
    path: str
    overrides: dict[str, Any] = field(default_factory=dict)


def validate_config(config: dict, schema_path: str | Path) -> None:
    """config_schema.validate_config (defaults filled in, one sentence if bad), then
    :func:`check_no_secrets`."""
    config_schema.validate_config(config, schema_path)
    check_no_secrets(config)


def check_no_secrets(config: Any, key: str = "") -> None:
    """Refuse a token pasted into the config: tokens belong in the environment.

    Snakemake records every rule's params in .snakemake/metadata and prints old and new
    values when they change ("Params have changed since last execution"), outside any log
    dubflow can redact; so a secret must never become a config value in the first place.
    """
    if isinstance(config, dict):
        for sub, value in config.items():
            check_no_secrets(value, f"{key}.{sub}" if key else str(sub))
    elif isinstance(config, list):
        for index, value in enumerate(config):
            check_no_secrets(value, f"{key}.{index}")
    elif isinstance(config, str) and config:
        from dubflow.redaction import secret_values

        secrets = secret_values()
        embedded = [v for v in secrets if len(v) >= MIN_EMBEDDED_SECRET_LEN]
        if (config in secrets or any(v in config for v in embedded)
                or HF_TOKEN_PATTERN.search(config)):
            raise ConfigError(
                f"the config key '{key}' holds what looks like an access token; tokens are "
                f"read from the environment only (for pyannote-hub: the variable named by "
                f"diarization.token_env, HF_TOKEN by default), because Snakemake records and "
                f"prints config values; remove it from the config and export it instead"
            )


def load_samples(config: dict, sheet_schema: str | Path) -> dict[str, Sample]:
    """Every video to dub: the sheet's rows first, then files in input_dir not in the sheet."""
    samples = discover_inputs(Path(config["input_dir"]))
    sheet = config["samples"]
    if sheet and Path(sheet).is_file():
        listed = read_sheet(Path(sheet), sheet_schema)
        check_sheet_files(Path(sheet), listed)
        samples.update(listed)
    return samples


def check_sheet_files(sheet: Path, listed: dict[str, Sample]) -> None:
    """Every file the sheet names exists and can be read, before any job starts.

    A batch over a season should not spend an hour on the first episodes and then stop
    at a typo in the last row; all bad rows are named at once.
    """
    bad = [s for s in listed.values()
           if not Path(s.path).is_file() or not os.access(s.path, os.R_OK)]
    if bad:
        rows = "; ".join(f"{s.path} for '{s.name}'" for s in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise InputError(
            f"the samples sheet {sheet} lists {rows}{more}, but there is no such file or it "
            f"cannot be read; fix its path column, create the file or remove the row"
        )


def read_table(sheet: Path) -> tuple[pd.DataFrame, list[int]]:
    """The sheet as a table of stripped strings (None for empty cells), and the file line
    of each row. Lines starting with '#' are comments; a '#' elsewhere is data, because a
    path may contain one. Empty cells after the last column (a spreadsheet's trailing tabs)
    are ignored; anything else that does not fit the header line is refused."""
    reader = None
    try:
        text = sheet.read_text(encoding="utf-8-sig")
        reader = csv.reader(io.StringIO(text), delimiter="\t", strict=True)
        header, rows, lines, end = None, [], [], 0
        for cells in reader:
            start, end = end + 1, reader.line_num  # a quoted cell may span lines
            cells = [cell.strip() for cell in cells]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if header is None:
                header = cells
                continue
            extra = cells[len(header):]
            if any(extra):
                raise InputError(
                    f"the samples sheet {sheet} has more cells in row {start} of the "
                    f"file ({len(header) + len(extra)}) than names in its first line "
                    f"({len(header)}): {extra[0]!r} has no column; fix the row or the header"
                )
            rows.append([cell or None for cell in cells[:len(header)]]
                        + [None] * (len(header) - len(cells)))
            lines.append(start)
    except (csv.Error, UnicodeDecodeError) as error:
        where = f"line {reader.line_num}: " if reader is not None and reader.line_num else ""
        raise InputError(
            f"the samples sheet {sheet} cannot be read as a tab-separated UTF-8 table "
            f"({where}{str(error).splitlines()[0]}); fix the file (a cell that starts with "
            f"a double quote must end with one) or set `samples` to another sheet"
        ) from None
    header = header or []
    while header and not header[-1] and all(row[len(header) - 1] is None for row in rows):
        header.pop()  # a trailing tab on the header line: an empty, unnamed column
        rows = [row[:len(header)] for row in rows]
    if "" in header:
        raise InputError(
            f"the samples sheet {sheet} has a column without a name (column "
            f"{header.index('') + 1} of its first line); name it or remove it"
        )
    return pd.DataFrame(rows, columns=header, dtype=object), lines


def read_sheet(sheet: Path, schema: str | Path) -> dict[str, Sample]:
    """Read the samples TSV; empty cells mean "use the global config"."""
    table, lines = read_table(sheet)
    for column in ("name", "path"):
        if column not in table.columns:
            raise InputError(
                f"the samples sheet {sheet} has no '{column}' column; its first line must "
                f"name the columns: name, path, source_language, target_languages"
            )
    unknown = [c for c in table.columns if c not in SHEET_COLUMNS]
    if unknown:
        # A misspelt override column would otherwise be ignored without a word.
        raise InputError(
            f"the samples sheet {sheet} has unknown column(s) {', '.join(map(repr, unknown))}; "
            f"fix its first line: the columns are {', '.join(SHEET_COLUMNS)}"
        )
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(table, str(schema))
    except WorkflowError as error:
        row = re.search(r"row (\d+)", str(error))
        where = f" (row {lines[int(row.group(1))]} of the file)" if row else ""
        raise InputError(
            describe_validation_error(error, f"the samples sheet {sheet}{where}", "column")
        ) from None
    for index, name in enumerate(table["name"]):
        if not safe_name(name):
            raise InputError(
                f"the samples sheet {sheet} (row {lines[index]} of the file) column 'name' is "
                f"invalid: {name!r} is not allowed; {SAFE_NAME_RULE}"
            )
    duplicated = table["name"][table["name"].duplicated()].tolist()
    if duplicated:
        raise InputError(
            f"the samples sheet {sheet} lists {duplicated[0]!r} more than once; "
            f"every name must be unique because it names the outputs"
        )
    samples = {}
    for row in table.to_dict("records"):
        values = {k: row[k] for k in SHEET_OVERRIDES if k in row and pd.notna(row[k])}
        if "target_languages" in values:
            values["target_languages"] = split_languages(values["target_languages"])
        for column in INTEGER_COLUMNS:
            if column in values:
                values[column] = int(values[column])
        samples[row["name"]] = Sample(row["name"], row["path"], values)
    return samples


def safe_name(name: Any) -> bool:
    """A sheet name that can name files and targets: letters, marks and digits of any
    script, space and . _ - ' only; not empty, not starting with - (an option) or .
    (hidden, "..")."""
    if not isinstance(name, str) or not name or name[0] in "-.":
        return False
    return all(unicodedata.category(ch)[0] in "LMN" or ch in SAFE_NAME_PUNCTUATION
               for ch in name)


def split_languages(value: str) -> list[str]:
    """'pt, es fr' -> ['pt', 'es', 'fr']."""
    return [code for code in re.split(r"[\s,]+", value.strip()) if code]


def discover_inputs(input_dir: Path) -> dict[str, Sample]:
    """Every visible file in input_dir is a video named by its stem: in/ep01.mkv -> ep01."""
    if not input_dir.is_dir():
        return {}
    found: dict[str, Sample] = {}
    for path in sorted(input_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        name = path.name.rsplit(".", 1)[0] if "." in path.name[1:] else path.name
        if any(unicodedata.category(ch) == "Cc" for ch in path.name):
            # The name becomes out/<name>.mkv, logs/<name>/ and a line of the batch summary.
            shown = str(path).encode("unicode_escape").decode("ascii")
            raise InputError(
                f"{shown} has a line break or another control character in its name, which "
                f"cannot name output files safely; rename the file (letters, digits, spaces "
                f"and punctuation are fine)"
            )
        if name in found:
            raise InputError(
                f"{found[name].path} and {path} would both be dubbed as '{name}'; "
                f"rename one of them or list them in the samples sheet with distinct names"
            )
        found[name] = Sample(name, str(path))
    return found


def settings_for(config: dict, sample: Sample | None) -> dict[str, Any]:
    """The config as seen by one video: global values with that video's sheet overrides."""
    merged = copy.deepcopy(config)
    merged.pop("samples", None)
    for column, value in (sample.overrides if sample else {}).items():
        *sections, key = SHEET_OVERRIDES[column]
        target = merged
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = copy.deepcopy(value)
    return merged


def preflight(config: dict, workflow_dir: str | Path) -> None:
    """Checks that need the filesystem, run once when the DAG is built (on a validated
    config).

    A relative model path is looked up in the working directory first, then in the
    workflow's folder, where `make setup` puts models/: so the default config works from
    any project folder. The config is updated in place with the path that was found.
    """
    resolve_model_paths(config, workflow_dir)
    check_whisper_model(config["asr"]["model"])
    from dubflow.diarize_models import preflight as check_diarization
    from dubflow.ffmpeg_safe import check_capabilities

    check_diarization(config["diarization"])
    if config["mix"]["separation"] == "spleeter":
        from dubflow.separation_weights import check_weights

        check_weights()
    elif config["mix"]["separation"] == "dtln":
        from dubflow.dtln import check_model

        check_model(config["mix"]["dtln_model"])
    check_capabilities(config["ffmpeg"])
    check_writable(("out", "work", "logs", "benchmarks"))


def resolve_model_paths(config: dict, workflow_dir: str | Path) -> None:
    """Every configured model/voice/glossary path, resolved like asr.model."""
    def resolve(value: str | None) -> str | None:
        if not value:
            return value
        path = Path(value)
        if not path.is_absolute() and not path.exists() and (Path(workflow_dir) / path).exists():
            path = Path(workflow_dir) / path
        return str(path)

    config["asr"]["model"] = resolve(config["asr"]["model"])
    translation, tts = config["translation"], config["tts"]
    for key in ("models", "glossary"):
        translation[key] = {pair: resolve(path) for pair, path in translation[key].items()}
    tts["piper_voices"] = {name: resolve(path) for name, path in tts["piper_voices"].items()}
    tts["kokoro_model"] = resolve(tts["kokoro_model"])
    tts["coqui"]["model_dir"] = resolve(tts["coqui"]["model_dir"])
    config["mix"]["dtln_model"] = resolve(config["mix"]["dtln_model"])


def check_languages(config: dict, samples: dict[str, Sample]) -> None:
    """Every (source, target) pair the run can meet: a backend and a voice for each.

    Cheap checks only (no model loading), so a language nobody can translate or voice
    stops the run before hours of transcription. An ``auto`` source language is checked
    when it is known, by the translate stage.
    """
    from dubflow.mt_models import check_pair
    from dubflow.voices import check_voices

    seen = set()
    for sample in [None, *samples.values()]:
        merged = settings_for(config, sample)
        source = merged["source_language"]
        for target in merged["target_languages"]:
            if (source, target) in seen:
                continue
            seen.add((source, target))
            if source != target:
                check_pair(None if source == "auto" else source, target, merged["translation"])
            check_voices(target, merged["tts"])


def check_writable(folders: tuple[str, ...]) -> None:
    """The output folders can be created and written, or say which one and why not."""
    for folder in folders:
        path = Path(folder)
        probe = path if path.exists() else next((p for p in path.absolute().parents if p.exists()), None)
        if probe is not None and (not probe.is_dir() or not _writable(probe)):
            raise ConfigError(
                f"the output folder {path.absolute()} cannot be written (read-only file system "
                f"or no permission); run dubflow from a folder you can write to, or fix its "
                f"permissions"
            )


def _writable(folder: Path) -> bool:
    if not os.access(folder, os.W_OK):
        return False
    try:  # os.access says yes to root even on a read-only mount
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def input_video(samples: dict[str, Sample], name: str, input_dir: str) -> str:
    """Path of a requested video (load_samples has checked that every file exists)."""
    if name not in samples:
        raise InputError(
            f"there is no input video for '{name}': put it at {input_dir}/{name}.<ext> "
            f"(mp4, mkv, mov, webm, avi, ...) or add a row for it to the samples sheet"
        )
    return samples[name].path
