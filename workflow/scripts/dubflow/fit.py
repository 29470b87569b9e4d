"""The timing plan of a dub: where each synthesized line goes and how it is made to fit.

A dubbed line rarely lasts exactly as long as the source line it replaces. The plan keeps
every line at its source start (absolute time, so nothing drifts over a two-hour film) and
fits a line that is too long in the least audible way first:

1. a line that fits its slot is left alone; a line shorter than its slot is *not*
   stretched (slow speech sounds worse than a pause);
2. a longer line first borrows the silence after its slot, up to ``gap_s`` before the next
   line starts (or up to the end of the media for the last line);
3. then it starts earlier, up to ``max_lead_s``, into the silence before it (never before
   the previous line has ended);
4. if it still does not fit, it is sped up (pitch preserved, by the mix stage) by
   ``natural / available``, but never by more than ``max_speedup``;
5. only then is it cut (by the mix stage, at the last pause between words that fits, with
   a fade) and flagged, so the QA report can point a human at it.

Before any of this, the synthesize stage has already asked the voice itself to speak a
line that would not fit faster (``tts.max_speed_boost``): that sounds better than step 4.

This module is pure: numbers in, numbers out, no audio and no files, so every rule above
is unit-tested directly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from dubflow.records import FitRow

#: Differences below this many seconds are rounding, not a reason to borrow, speed or trim.
EPSILON_S = 1e-6


@dataclass(frozen=True)
class Placement:
    """How one synthesized line is placed in the dub (also a row of fit.json)."""

    id: str
    start: float  # where the line starts playing: the source line's start minus lead_s
    slot_s: float  # the source line's own length (end - start)
    available_s: float  # room before the next line (minus the gap) or the media end
    natural_s: float  # length of the synthesized audio as it came from TTS
    borrowed_s: float  # seconds played past the slot's end, in the silence after it
    speed: float  # tempo factor applied (1.0 = untouched, never below 1.0)
    trimmed_s: float  # seconds cut off the (sped-up) line's end
    flags: list[str] = field(default_factory=list)
    lead_s: float = 0.0  # seconds started before the source line, in the silence before it

    @property
    def played_s(self) -> float:
        """Seconds the line actually sounds in the dub."""
        return min(self.natural_s / self.speed, self.available_s)

    @property
    def end(self) -> float:
        return self.start + self.played_s

    def to_dict(self) -> dict[str, Any]:
        """The fit.json row: times rounded to the millisecond, speed to four decimals."""
        row = asdict(self)
        for key in ("start", "slot_s", "available_s", "natural_s", "borrowed_s", "trimmed_s",
                    "lead_s"):
            row[key] = round(row[key], 3)
        row["speed"] = round(row["speed"], 4)
        return row

    def to_row(self, line: dict, cut: dict | None = None) -> FitRow:
        """The fit.json row: this placement of lines.json row ``line``, and ``cut`` (what
        the mix cut off a line it had to cut short)."""
        return FitRow(**self.to_dict(), played_s=round(self.played_s, 3),
                      text=line.get("text"), speaker=line.get("speaker"),
                      voice=line.get("voice"), engine_speed=line.get("engine_speed"), cut=cut)


def plan(
    lines: list[dict], max_speedup: float, media_end_s: float, gap_s: float = 0.05,
    max_lead_s: float = 0.0,
) -> list[Placement]:
    """One placement per line that has a wav, in start order; see the module docstring.

    ``lines`` are lines.json rows: ``id``, ``start``, ``end``, ``wav`` (None for a line that
    was not synthesized, e.g. empty text) and ``duration_s`` (the wav's natural length).
    Lines without a wav make no sound, so they neither get a placement nor limit how far
    the line before them may borrow. The plan guarantees that placed lines never overlap:
    each one ends at or before the next one's start.
    """
    voiced = sorted(
        (line for line in lines if line.get("wav")),
        key=lambda line: (float(line["start"]), str(line["id"])),
    )
    placements: list[Placement] = []
    for i, line in enumerate(voiced):
        start = float(line["start"])
        slot = max(0.0, float(line["end"]) - start)
        limit = float(voiced[i + 1]["start"]) - gap_s if i + 1 < len(voiced) else media_end_s
        available = max(0.0, limit - start)
        previous_end = placements[-1].end + gap_s if placements else 0.0
        lead_room = max(0.0, min(max_lead_s, start - previous_end))
        placements.append(fit_line(str(line["id"]), start, slot, available,
                                   float(line["duration_s"]), max_speedup, lead_room))
    return placements


def fit_line(
    line_id: str, start: float, slot_s: float, available_s: float, natural_s: float,
    max_speedup: float, lead_room_s: float = 0.0,
) -> Placement:
    """Fit one line into ``available_s`` seconds: as is, borrowed, sped up, then trimmed.

    ``available_s`` is normally at least the slot; it is shorter only when the source
    lines themselves overlap (two people talking at once), and then the line is fitted to
    what is left before the next one rather than talking over it.
    """
    if not math.isfinite(natural_s) or natural_s < 0:
        raise ValueError(f"line {line_id}: natural length {natural_s!r} is not a duration")
    lead = 0.0
    if natural_s > available_s + EPSILON_S and lead_room_s > EPSILON_S:
        lead = min(lead_room_s, natural_s - available_s)
        start, available_s = start - lead, available_s + lead
    if natural_s <= available_s + EPSILON_S:
        speed, played = 1.0, natural_s
    else:
        speed = min(natural_s / available_s, max_speedup) if available_s > 0 else max_speedup
        played = natural_s / speed
    trimmed = max(0.0, played - available_s)
    if trimmed <= EPSILON_S:
        trimmed = 0.0
    borrowed = max(0.0, min(played, available_s) - lead - slot_s)
    if borrowed <= EPSILON_S:
        borrowed = 0.0
    flags = [flag for flag, on in (("borrowed", borrowed), ("led", lead), ("sped_up", speed > 1.0),
                                   ("trimmed", trimmed)) if on]
    return Placement(
        id=line_id,
        start=start,
        slot_s=slot_s,
        available_s=available_s,
        natural_s=natural_s,
        borrowed_s=borrowed,
        speed=speed,
        trimmed_s=trimmed,
        flags=flags,
        lead_s=lead,
    )


def summary(placements: list[Placement]) -> dict[str, Any]:
    """The counts the QA report shows at the top of the fit section."""
    return {
        "lines": len(placements),
        "borrowed": sum("borrowed" in p.flags for p in placements),
        "led": sum("led" in p.flags for p in placements),
        "sped_up": sum("sped_up" in p.flags for p in placements),
        "trimmed": sum("trimmed" in p.flags for p in placements),
        "max_speed": round(max((p.speed for p in placements), default=1.0), 4),
    }
