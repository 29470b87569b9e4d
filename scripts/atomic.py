"""Atomic file writes: a killed run leaves the old file or the complete new one.

The temp file lives in the destination's directory (so the final ``os.replace`` is a
rename on one filesystem) and keeps the destination's suffix (so ffmpeg and soundfile
infer the format from it). It is hidden and marked ``.partial`` so that nobody mistakes
it for a result if the process is killed with SIGKILL before cleanup can run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=dest.parent, prefix=f".{dest.stem[:40]}.", suffix=f".partial{dest.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0 and not _allow_empty(dest):
            # A writer that produced nothing must not replace a good file with nothing.
            raise OSError(f"nothing was written to {tmp} for {dest}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _allow_empty(dest: Path) -> bool:
    # Text outputs may legitimately be empty (no speech -> empty RTTM).
    return dest.suffix in {".rttm", ".srt", ".vtt", ".txt", ".tsv", ".json"}


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as pretty, UTF-8 JSON to ``dest`` atomically."""
    write_text(dest, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
