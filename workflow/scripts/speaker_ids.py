"""Stage speaker_ids: the episode's final speaker ids, ``work/{name}/speakers.rttm``.

Without a series it copies the diarize stage's ``speakers.local.rttm`` byte for byte (ids
by first appearance). With a series (``diarization.series``, or the samples sheet's
``series`` column) its inputs are this episode's local RTTM and speaker centroids plus the
centroids of every episode of the same series whose name sorts before it; it replays the
series in that order (``dubflow.speaker_db.replay``, matching at
``diarization.match_threshold``) and writes this episode's turns under the series ids.

So an episode's ids depend only on the episodes named before it: adding a later episode
never changes them, the order in which jobs run never matters, and re-diarizing an
episode re-runs the relabelling of that episode and of the ones named after it only. The
step is cheap (no models: a few small matrix matches per earlier episode).
"""

import logging
from pathlib import Path
from typing import Any

from dubflow.atomic import write_text
from dubflow.rttm import Turn, read_rttm, write_rttm
from dubflow.speaker_db import read_episode_speakers, replay

STAGE = "speaker_ids"
log = logging.getLogger(__name__)


def run(
    local_rttm: str | Path,
    centroids: str | Path,
    earlier: list[str | Path],
    rttm_path: str | Path,
    diarization: dict[str, Any],
    recording_id: str,
) -> dict[str, str]:
    """Write ``rttm_path``; return the mapping from local labels to series ids ({} when
    there is no series). ``earlier``: the centroids of the series' episodes named before
    this one, in name order."""
    series = diarization["series"]
    if not series:
        write_text(rttm_path, Path(local_rttm).read_text(encoding="utf-8"))
        log.info("%s: no series, ids by first appearance", recording_id)
        return {}
    episodes = [read_episode_speakers(path, STAGE) for path in [*earlier, centroids]]
    _, mappings = replay(episodes, str(series), float(diarization["match_threshold"]))
    mapping = mappings[-1]
    turns = [Turn(t.start, t.end, mapping.get(t.speaker, t.speaker)) for t in read_rttm(local_rttm)]
    turns.sort(key=lambda t: (t.start, t.end, t.speaker))
    write_rttm(rttm_path, turns, recording_id)
    log.info("%s: series %s after %d earlier episodes: %s", recording_id, series, len(earlier),
             ", ".join(f"{k}->{v}" for k, v in mapping.items()) or "no speakers")
    return mapping


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        run,
        local_rttm=sm.input.rttm,
        centroids=sm.input.centroids,
        earlier=list(sm.input.earlier),
        rttm_path=sm.output.rttm,
        diarization=sm.params.diarization,
        recording_id=sm.wildcards.name,
    )
