# Config validation, the samples sheet and the input functions shared by all rules.
# The logic lives in scripts/settings.py (tested without Snakemake); this file wires it.
import json
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
import settings as dubflow_settings
from errors import DubflowError

try:
    dubflow_settings.validate_config(
        config, Path(workflow.basedir) / "config" / "schema.yaml"
    )
    dubflow_settings.preflight(config, workflow.basedir)
    SAMPLES = dubflow_settings.load_samples(
        config, Path(workflow.basedir) / "config" / "samples.schema.yaml"
    )
except DubflowError as error:
    raise WorkflowError(f"dubflow: {error}") from None


wildcard_constraints:
    name=r"[^/]+",
    lang=r"[a-z]{2,3}",


def settings_for(name):
    """Config as seen by one video (global keys + its samples-sheet overrides)."""
    return dubflow_settings.settings_for(config, SAMPLES.get(name))


def video_path(wildcards):
    try:
        return dubflow_settings.input_video(
            SAMPLES, wildcards.name, config["input_dir"]
        )
    except DubflowError as error:
        raise WorkflowError(f"dubflow: {error}") from None


def source_language(name):
    """Spoken language: configured, or as detected by transcribe (a checkpoint)."""
    transcript = checkpoints.transcribe.get(name=name).output.transcript
    with open(transcript, encoding="utf-8") as handle:
        return json.load(handle)["language"]


def source_subtitles(wildcards):
    lang = source_language(wildcards.name)
    return {
        "srt": f"out/{wildcards.name}.{lang}.srt",
        "vtt": f"out/{wildcards.name}.{lang}.vtt",
    }


def subtitle_text(wildcards):
    """Source-language subtitles come from the transcript, others from translation."""
    if wildcards.lang == source_language(wildcards.name):
        return f"work/{wildcards.name}/transcript.json"
    return f"work/{wildcards.name}/{wildcards.lang}/translation.json"
