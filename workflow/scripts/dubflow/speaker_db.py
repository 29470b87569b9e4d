"""Speakers who keep their ids across the episodes of a series.

The diarize stage labels each episode's speakers by first appearance and writes their
centroid embeddings (``work/{name}/speaker_centroids.json``, :func:`write_episode_speakers`).
The speaker_ids stage then replays the series in name order (:func:`replay`): the first
episode keeps its ids; each later one's speakers are matched one to one by cosine
similarity to the speakers known from the episodes before it (each known speaker's
centroid is the unit mean of its per-episode centroids), and unmatched speakers get the
next free id. So ``SPEAKER_01`` is the same character, and later keeps the same dub
voice, in every episode.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dubflow.atomic import write_json
from dubflow.errors import InputError
from dubflow.records import read_json

log = logging.getLogger(__name__)


def speaker_id(number: int) -> str:
    return f"SPEAKER_{number:02d}"


@dataclass
class KnownSpeaker:
    """A series' speaker: the mean of its per-episode centroids (unit length)."""

    centroid: list[float]
    episodes: dict[str, list[float]] = field(default_factory=dict)  # the contributions


@dataclass
class SpeakerDB:
    """All known speakers of one series; ``next_id`` keeps retired ids from returning."""

    next_id: int = 0
    speakers: dict[str, KnownSpeaker] = field(default_factory=dict)


@dataclass
class EpisodeSpeakers:
    """One episode's speakers as diarize found them: labels in order of first appearance
    and the unit centroid of each speaker that has one (a speaker with too little speech
    for an embedding has none, and always gets a new id)."""

    recording: str
    order: list[str]
    centroids: dict[str, np.ndarray] = field(default_factory=dict)


def write_episode_speakers(
    path: str | Path, recording: str, order: list[str], centroids: dict[str, np.ndarray]
) -> None:
    """``speaker_centroids.json``: the episode's speakers and their unit centroids, written
    atomically; vectors at full precision (JSON floats round-trip exactly), so a replay
    matches on the numbers diarize computed."""
    units = {label: _unit(np.asarray(centroids[label], dtype=np.float64))
             for label in order if label in centroids}
    units = {label: unit.tolist() for label, unit in units.items() if unit is not None}
    write_json(path, {"recording": recording, "speakers": list(order), "centroids": units})


def read_episode_speakers(path: str | Path, stage: str) -> EpisodeSpeakers:
    """What :func:`write_episode_speakers` wrote; a damaged file is one sentence."""
    raw = read_json(path, stage, "diarize")  # missing or not JSON: its one sentence
    try:
        order = [str(label) for label in raw["speakers"]]
        centroids = {
            str(label): np.asarray([float(x) for x in vector], dtype=np.float64)
            for label, vector in raw["centroids"].items()
        }
        return EpisodeSpeakers(recording=str(raw["recording"]), order=order, centroids=centroids)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"{path} cannot be read as speaker centroids ({error}; stage {stage}); delete it "
            f"and re-run so the diarize stage writes it again"
        ) from None


def replay(
    episodes: list[EpisodeSpeakers], series: str, match_threshold: float
) -> tuple[SpeakerDB, list[dict[str, str]]]:
    """Series ids for ``episodes``, in the order given (the caller's: name order).

    Returns the database after the last episode and, per episode, the mapping from its
    own labels to series ids. An episode without speakers (no speech) changes nothing.
    """
    db = SpeakerDB()
    mappings = []
    for episode in episodes:
        if not episode.order:
            mappings.append({})
            continue
        if not episode.centroids:
            log.warning(
                "series %s: %s has no speaker embeddings, so its speakers cannot be matched "
                "to known ones and all get new ids", series, episode.recording,
            )
        mapping = match_speakers(episode.centroids, episode.order, db, match_threshold)
        renamed = {mapping[label]: vector for label, vector in episode.centroids.items()
                   if label in mapping}
        update_speaker_db(db, renamed, episode.recording)
        log.info("series %s, %s: %s", series, episode.recording,
                 ", ".join(f"{k}->{v}" for k, v in mapping.items()))
        mappings.append(mapping)
    return db, mappings


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

    Contributions are kept per episode, so recording an episode again replaces its
    contribution instead of counting it twice.
    """
    for speaker in db.speakers.values():
        speaker.episodes.pop(recording_id, None)
    for name, vector in centroids.items():
        unit = _unit(vector)
        if unit is None:
            continue
        entry = db.speakers.setdefault(name, KnownSpeaker(centroid=[]))
        entry.episodes[recording_id] = unit.tolist()
    for name, entry in list(db.speakers.items()):
        if not entry.episodes:  # its only episode now has no usable centroid
            del db.speakers[name]
            continue
        mean = _unit(np.mean([np.asarray(v) for v in entry.episodes.values()], axis=0))
        entry.centroid = mean.tolist() if mean is not None else entry.centroid
