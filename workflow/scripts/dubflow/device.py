"""Which processor a model runs on: `cpu`, `cuda`, or `auto` (a GPU when one is visible).

Config keys `asr.device`, `translation.device` and `diarization.device` use this, so the
same config runs on a laptop and on a GPU partition (`auto`), while `cuda` on a machine
without a GPU stops with a sentence instead of silently running 10x slower.
"""

from __future__ import annotations

from dubflow.errors import ConfigError


def cuda_devices(library: str = "ctranslate2") -> int:
    """GPUs visible to the library that will run the model (0 when it cannot use any)."""
    try:
        if library == "torch":
            import torch

            return torch.cuda.device_count() if torch.cuda.is_available() else 0
        import ctranslate2

        return ctranslate2.get_cuda_device_count()
    except Exception:  # noqa: BLE001 - a broken CUDA install means: no GPU here
        return 0


def resolve_device(setting: str | None, key: str, library: str = "ctranslate2") -> str:
    """`cpu` or `cuda` for config key ``key``'s value (the schema allows cpu, cuda, auto)."""
    if not setting or setting == "cpu":
        return "cpu"
    found = cuda_devices(library)
    if setting == "cuda" and not found:
        raise ConfigError(
            f"the config key '{key}' asks for cuda, but {library} sees no CUDA GPU on this "
            f"machine; set it to auto (GPU when present) or cpu"
        )
    return "cuda" if found else "cpu"
