"""Speakers who keep their ids across the episodes of a series.

Each series has one JSON file, ``{speaker_db}/{series}.json``, with every known
speaker's centroid embedding (unit length, the mean of its per-episode centroids). A new
episode's speakers are matched to those one to one by cosine similarity, so
``SPEAKER_01`` is the same character, and later keeps the same dub voice, in every
episode. Unmatched speakers get the next free id.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np

from dubflow.atomic import write_json
from dubflow.errors import InputError

log = logging.getLogger(__name__)


def speaker_id(number: int) -> str:
    return f"SPEAKER_{number:02d}"


@dataclass
class KnownSpeaker:
    """A series' speaker: the mean of its per-episode centroids (unit length)."""

    centroid: list[float]
    count: int  # episodes that contributed
    episodes: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class SpeakerDB:
    """All known speakers of one series; ``next_id`` keeps retired ids from returning."""

    series: str
    next_id: int = 0
    speakers: dict[str, KnownSpeaker] = field(default_factory=dict)


def speaker_db_path(settings: dict[str, Any]) -> Path | None:
    """``{speaker_db}/{series}.json``, or None when no series is configured."""
    series = settings["series"]
    if not series:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(series)).strip("._") or "series"
    return Path(settings["speaker_db"]) / f"{safe}.json"


def load_speaker_db(path: str | Path, series: str) -> SpeakerDB:
    """The stored series speakers, or an empty database for a new series."""
    path = Path(path)
    if not path.exists():
        return SpeakerDB(series=series)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        speakers = {
            name: KnownSpeaker(
                centroid=[float(x) for x in entry["centroid"]],
                count=int(entry["count"]),
                episodes={
                    k: [float(x) for x in v] for k, v in entry.get("episodes", {}).items()
                },
            )
            for name, entry in raw["speakers"].items()
        }
        return SpeakerDB(
            series=raw.get("series", series), next_id=int(raw["next_id"]), speakers=speakers
        )
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"speaker database {path} is damaged ({error}); fix or delete it (speaker ids "
            "of this series then start again from SPEAKER_00)"
        ) from None


def save_speaker_db(path: str | Path, db: SpeakerDB) -> None:
    data = {
        "series": db.series,
        "next_id": db.next_id,
        "speakers": {
            name: {
                "centroid": [round(x, 6) for x in s.centroid],
                "count": s.count,
                "episodes": {
                    k: [round(x, 6) for x in v] for k, v in sorted(s.episodes.items())
                },
            }
            for name, s in sorted(db.speakers.items())
        },
    }
    write_json(path, data)


def _unit(vector: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm == 0.0:
        return None
    return vector / norm


def match_speakers(
    centroids: dict[str, np.ndarray],
    order: list[str],
    db: SpeakerDB,
    match_threshold: float,
) -> dict[str, str]:
    """Map this episode's labels to series ids, one to one.

    Pairs are chosen to maximise total cosine similarity (Hungarian assignment) and
    kept only at ``match_threshold`` or above; every other speaker gets the next free
    id, in order of first appearance. ``db.next_id`` advances past new ids.
    """
    from scipy.optimize import linear_sum_assignment

    local = [
        label for label in order if label in centroids and _unit(centroids[label]) is not None
    ]
    known = list(db.speakers)
    mapping: dict[str, str] = {}
    if local and known:
        a = np.stack([_unit(centroids[label]) for label in local])
        b = np.stack([_unit(np.asarray(db.speakers[k].centroid)) for k in known])
        similarity = a @ b.T
        rows, cols = linear_sum_assignment(similarity, maximize=True)
        for r, c in zip(rows, cols, strict=True):
            if similarity[r, c] >= match_threshold:
                mapping[local[r]] = known[c]
        for label, row in zip(local, similarity, strict=True):
            log.info(
                "%s similarity to known speakers: %s",
                label,
                ", ".join(f"{k} {x:.2f}" for k, x in zip(known, row, strict=True)),
            )
    for label in order:
        if label not in mapping:
            mapping[label] = speaker_id(db.next_id)
            db.next_id += 1
    return mapping


def update_speaker_db(
    db: SpeakerDB, centroids: dict[str, np.ndarray], recording_id: str
) -> None:
    """Record this episode's centroids and recompute each speaker's mean.

    Contributions are kept per episode, so re-running an episode replaces its
    contribution instead of counting it twice.
    """
    for speaker in db.speakers.values():
        speaker.episodes.pop(recording_id, None)
    for name, vector in centroids.items():
        unit = _unit(vector)
        if unit is None:
            continue
        entry = db.speakers.setdefault(name, KnownSpeaker(centroid=[], count=0))
        entry.episodes[recording_id] = unit.tolist()
    for name in list(db.speakers):
        entry = db.speakers[name]
        if not entry.episodes:
            if not entry.centroid:
                del db.speakers[name]
            continue  # a speaker known from an older database format: keep as is
        mean = _unit(np.mean([np.asarray(v) for v in entry.episodes.values()], axis=0))
        entry.centroid = mean.tolist() if mean is not None else entry.centroid
        entry.count = len(entry.episodes)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s lock file: two episodes of one series
    diarized in parallel must not both hand out the same new id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
