"""Atomic file writes: a killed run leaves the old file or the complete new one.

The temp file lives in the destination's directory (so the final ``os.replace`` is a
rename on one filesystem) and keeps the destination's suffix (so ffmpeg and soundfile
infer the format from it). It is hidden and marked ``.partial`` so that nobody mistakes
it for a result if the process is killed with SIGKILL before cleanup can run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Iterator

#: Text outputs that may legitimately be empty (no speech -> empty RTTM).
MAY_BE_EMPTY = {".rttm", ".srt", ".vtt", ".txt", ".tsv", ".json"}


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(**_partial_name(dest))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0 and dest.suffix not in MAY_BE_EMPTY:
            # A writer that produced nothing must not replace a good file with nothing.
            raise OSError(f"nothing was written to {tmp} for {dest}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _partial_name(dest: Path) -> dict[str, Any]:
    """mkstemp/mkdtemp arguments for every partial file or folder of ``dest``: hidden,
    ``.<stem>.<8 random>.partial<suffix>``, the one name remove_stale_temps knows."""
    return {"dir": dest.parent, "prefix": f".{dest.stem[:40]}.", "suffix": f".partial{dest.suffix}"}


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a hidden folder beside ``dest`` that replaces it only if the block succeeds:
    the folder twin of :func:`atomic_path` (a killed job leaves no half-filled folder)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)  # a direct call has no rule runner to do it
    tmp = Path(tempfile.mkdtemp(**_partial_name(dest)))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if dest.exists():  # Snakemake removes it first; a direct call may not
            old = Path(tempfile.mkdtemp(**_partial_name(dest)))
            os.replace(dest, old / dest.name)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """A hidden working folder beside ``dest`` for a stage's intermediate files, removed
    afterwards whatever happens (or, after a SIGKILL, by remove_stale_temps)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(**_partial_name(dest)))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temps(dest: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files and folders a SIGKILLed writer of ``dest`` left behind.

    SIGKILL cannot be caught, so the ``finally`` above never runs and a hidden
    ``.<stem>.*.partial*`` sibling stays. The rule runner calls this before a stage writes
    ``dest`` again; Snakemake's directory lock guarantees no other job is writing it.
    """
    dest = Path(dest)
    stem = re.escape(dest.stem[:40])
    # exactly the names _partial_name makes for this output, nothing wider: out/ep.mkv's
    # writer once took ".ep.report.x1.partial.html" for its own, and deleted it while the
    # report job was writing it (so did out/ep.pt.ass and out/ep.pt.vtt)
    ours = re.compile(rf"\.{stem}\.[a-z0-9_]{{8}}\.partial{re.escape(dest.suffix)}")
    removed = []
    if dest.parent.is_dir():
        for path in dest.parent.iterdir():
            if ours.fullmatch(path.name):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as pretty, UTF-8 JSON to ``dest`` atomically."""
    write_text(dest, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def link_or_copy(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Hard link (no extra disk, instant); copy where links are impossible (another
    filesystem). Used to place files from a cache into a rule's output."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """A file's sha256, read in blocks (model files are hundreds of MB)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
