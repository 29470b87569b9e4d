# Config validation, the samples sheet and the input functions shared by all rules.
# The logic lives in workflow/scripts/dubflow/settings.py (tested without Snakemake); this file wires it.
import functools
import json
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# The folder of this workflow, also when it is used as a `module` from another project
# (workflow.basedir is then the other project's folder).
WORKFLOW_DIR = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parent
sys.path.insert(0, str(WORKFLOW_DIR / "scripts"))
from dubflow import batch as dubflow_batch
from dubflow import cluster as dubflow_cluster
from dubflow import settings as dubflow_settings
from dubflow.errors import DubflowError
from dubflow.review import choices as review_choices

try:
    dubflow_settings.validate_config(
        config, WORKFLOW_DIR / "schemas" / "config.schema.yaml"
    )
    dubflow_settings.preflight(config, WORKFLOW_DIR.parent)
    SAMPLES = dubflow_settings.load_samples(
        config, WORKFLOW_DIR / "schemas" / "samples.schema.yaml"
    )
    dubflow_settings.check_languages(config, SAMPLES)
except DubflowError as error:
    raise WorkflowError(f"dubflow: {error}") from None


wildcard_constraints:
    name=r"[^/]+",
    lang=r"[a-z]{2,3}",


def voice_choices_file(name):
    """The reviewer's voice choices for one video (written by tools/review.py)."""
    return review_choices.voices_path(config["edits_dir"], name)


@functools.cache
def settings_for(name):
    """Config as seen by one video (global keys + its samples-sheet overrides + the
    reviewer's voice choices, edits/{name}.voices.yaml, over tts.voices); read-only."""
    merged = dubflow_settings.settings_for(config, SAMPLES.get(name))
    try:
        choices = review_choices.read_choices(voice_choices_file(name))
    except DubflowError as error:
        raise WorkflowError(f"dubflow: {error}") from None
    return review_choices.merge_voices(merged, choices)


def synthesis_inputs(wildcards):
    """The reviewer's voice choices for this video, when there are any."""
    path = voice_choices_file(wildcards.name)
    return {"voices": str(path)} if path.is_file() else {}


def diarization_model_settings(name):
    """The diarization section that diarize gets, without the keys only speaker_ids
    reads: moving a video to another series relabels it, and does not diarize it again.
    """
    return {
        key: value
        for key, value in settings_for(name)["diarization"].items()
        if key not in ("series", "match_threshold")
    }


def speaker_ids_inputs(wildcards):
    """This episode's local RTTM and centroids, plus the centroids of every episode of
    the same series (samples sheet, or diarization.series for all) named before it, in
    name order: its ids depend on those and nothing else (see scripts/speaker_ids.py).
    """
    name = wildcards.name
    series = settings_for(name)["diarization"]["series"]
    earlier = [
        other
        for other in sorted(SAMPLES)
        if series
        and other < name
        and settings_for(other)["diarization"]["series"] == series
    ]
    return {
        "rttm": f"work/{name}/speakers.local.rttm",
        "centroids": f"work/{name}/speaker_centroids.json",
        "earlier": [f"work/{other}/speaker_centroids.json" for other in earlier],
    }


def mix_bed(wildcards):
    """What the dub is mixed over: the separated bed, or the original mix."""
    if settings_for(wildcards.name)["mix"]["separation"] == "none":
        return f"work/{wildcards.name}/source.wav"
    return f"work/{wildcards.name}/bed.wav"


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


def mux_inputs(wildcards):
    """Dub tracks in target-language order, then subtitles: source language first."""
    name = wildcards.name
    source = source_language(name)
    targets = settings_for(name)["target_languages"]
    languages = [source] + [lang for lang in targets if lang != source]
    extra = "ass" in settings_for(name)["subtitles"]["formats"]
    return {
        "dubs": [f"work/{name}/{lang}/dub.mka" for lang in targets],
        "subtitles": [f"out/{name}.{lang}.srt" for lang in languages],
        # not muxed: asked for so that out/{name}.mkv brings every deliverable
        "ass": [f"out/{name}.{lang}.ass" for lang in languages] if extra else [],
    }


def report_inputs(wildcards):
    targets = settings_for(wildcards.name)["target_languages"]
    return {
        "translations": [
            f"work/{wildcards.name}/{lang}/translation.json" for lang in targets
        ],
        "fits": [f"work/{wildcards.name}/{lang}/fit.json" for lang in targets],
        "separation": (
            []
            if settings_for(wildcards.name)["mix"]["separation"] == "none"
            else [f"work/{wildcards.name}/separation.json"]
        ),
    }


def report_benchmarks(wildcards):
    """Every benchmark file the QA page's timing table reads, declared (qa_data.benchmark_files)."""
    from dubflow.qa_data import benchmark_files

    name = wildcards.name
    return benchmark_files(name, settings_for(name), source_language(name), rules)


def translation_inputs(wildcards):
    """The reviewer's edits file for this video and language, when there is one."""
    edits = Path(config["edits_dir"]) / f"{wildcards.name}.{wildcards.lang}.tsv"
    return {"edits": str(edits)} if edits.is_file() else {}


def subtitle_text(wildcards):
    """Source-language subtitles come from the transcript, others from translation."""
    if wildcards.lang == source_language(wildcards.name):
        return f"work/{wildcards.name}/transcript.json"
    return f"work/{wildcards.name}/{wildcards.lang}/translation.json"


onstart:
    dubflow_batch.write_effective_config(config, "logs/config.effective.yaml")
    try:
        for line in dubflow_cluster.check_workflow(workflow):
            print(line, file=sys.stderr)
    except DubflowError as error:
        raise WorkflowError(f"dubflow: {error}") from None


def report_batch():
    """One line per video of the sheet: done, or failed with the reason and its log."""
    rows = dubflow_batch.summarise(sorted(SAMPLES))
    dubflow_batch.write_summary(rows, "logs/batch-summary.tsv")
    print(dubflow_batch.format_summary(rows), file=sys.stderr)


onsuccess:
    report_batch()


onerror:
    report_batch()
