"""The stamp `make setup` leaves in a model folder it built (``dubflow-model.json``): each
file's sha256 with the size and modification time it had, so a check at every run
re-hashes only a file that changed since (a 256 MB graph takes a second to hash)."""

from __future__ import annotations

import json
from pathlib import Path

STAMP_FILE = "dubflow-model.json"


def read_stamp(folder: Path) -> dict:
    """The folder's stamp; empty when there is none or it cannot be read."""
    try:
        return json.loads((Path(folder) / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return {}


def file_record(path: Path, sha256: str) -> dict:
    stat = path.stat()
    return {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def unchanged(path: Path, record: dict | None) -> bool:
    """True if ``path`` is the file the stamp describes (size and mtime, no hashing)."""
    if not record or not path.is_file():
        return False
    stat = path.stat()
    return stat.st_size == record.get("size") and stat.st_mtime_ns == record.get("mtime_ns")
