"""Stage report: one self-contained HTML page per video, for a reviewer checking a dub.

The reviewer usually has the page and nothing else (a mail attachment, a USB stick,
``snakemake --report``), so the file carries everything itself: the CSS, the timeline as a
base64 PNG, no scripts, fonts or links that would need a network. Transcript and
translation text is untrusted (it comes from the audio and from hand edits), so every text
that reaches the page goes through ``html.escape``.

A two-hour film has ~1,500 lines per language; the page stays light by drawing the
timeline once as a raster image split into stacked panels (one long axis would squeeze a
line into a pixel) and by keeping table rows to plain cells and short class names.
"""

import base64
import csv
import html
import io
import json
import logging
import math
import string
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.path import Path as MplPath
from PIL import Image

from dubflow.atomic import write_text
from dubflow.errors import InputError
from dubflow.languages import language_name
from dubflow.rttm import Turn, read_rttm

STAGE = "report"
TEMPLATE = Path(__file__).resolve().parents[1] / "report" / "qa_template.html"
# matplotlib's tab10, written out so the table swatches match the plot without asking it.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LOUDNESS_TOLERANCE_LU = 1.0
SINGLE_PANEL_MAX_S = 360.0
MIN_PANEL_S = 300.0
MAX_PANELS = 12
TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
STAGE_ORDER = ("extract", "diarize", "transcribe", "translate", "subtitles", "synthesize",
               "mix", "mux", "report")
NO_SPEAKER = "(unlabelled)"  # diarization off or failed: lines still get a row
FLAG_LABELS = {"condensed": ("bo", "condensed"), "voice_faster": ("bo", "voice faster"),
               "borrowed": ("bo", "borrowed"), "led": ("bo", "started early"),
               "sped_up": ("sp", "sped up"), "trimmed": ("tr", "trimmed"),
               "unvoiced": ("bo", "not voiced")}
log = logging.getLogger(__name__)


@dataclass
class DubLine:
    """One translated line joined with how the mix placed it (fit.json may lack any key)."""

    id: str
    speaker: str
    start: float
    end: float  # end of the source slot, from the translation
    source: str
    text: str
    edited: bool = False
    voice: str = ""
    slot_s: float | None = None
    available_s: float | None = None  # slot plus the silence after it that may be borrowed
    natural_s: float | None = None
    borrowed_s: float | None = None
    speed: float | None = None
    trimmed_s: float | None = None
    played_s: float | None = None
    placed: bool = True  # False: fit.json has no row for it, so no audio was placed
    flags: list[str] = field(default_factory=list)
    low_confidence: bool = False
    confidence_note: str = ""
    full_text: str = ""  # the whole translation when the voiced text was condensed
    dropped_words: str = ""  # what a cut line lost (estimated)

    @property
    def placed_end(self) -> float:
        """Where the dubbed audio stops: natural length at its speed, minus any trim.

        fit.json's ``played_s`` says it directly; without it the figures are combined, and
        the mix never plays past the available time; without a natural length the slot is
        the best guess.
        """
        if self.played_s is not None:
            return self.start + max(self.played_s, 0.0)
        if self.natural_s is None:
            return self.start + (self.slot_s if self.slot_s is not None else self.end - self.start)
        played = self.natural_s / (self.speed or 1.0) - (self.trimmed_s or 0.0)
        if self.available_s is not None:
            played = min(played, self.available_s)
        return self.start + max(played, 0.0)


@dataclass
class Language:
    code: str
    backend: str = ""
    model: str = ""
    lines: list[DubLine] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    loudness: dict = field(default_factory=dict)
    has_fit: bool = False
    voices: dict = field(default_factory=dict)  # speaker -> source F0, voice, voice F0


@dataclass
class Timing:
    stage: str
    seconds: float
    max_rss_mb: float | None


# --- reading ------------------------------------------------------------------------------


def load_json(path: str | Path, producer: str) -> dict:
    """A JSON input, or one sentence naming the file and the stage that writes it."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path} is missing, so the report stage has nothing to show; run the {producer} "
            f"stage first (snakemake {path})"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(
            f"{path} is not valid JSON ({error}); delete it and re-run so the {producer} "
            f"stage writes it again"
        ) from None
    if not isinstance(document, dict):
        raise InputError(
            f"{path} is JSON but not an object; delete it and re-run so the {producer} stage "
            f"writes it again"
        )
    return document


def number(value) -> float | None:
    """A finite float, or None for absent, null, text or NaN (fit.json is still evolving)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def line_key(line: dict) -> str:
    """Lines join on their stable id; a line without one falls back to its start time."""
    if line.get("id") not in (None, ""):
        return str(line["id"])
    return f"@{number(line.get('start')) or 0.0:.3f}"


def segment_index(segments: list[dict]) -> tuple[list[float], list[dict]]:
    ordered = sorted((s for s in segments if number(s.get("start")) is not None),
                     key=lambda s: number(s["start"]))
    return [number(s["start"]) for s in ordered], ordered


def source_segment(index: tuple[list[float], list[dict]], start: float, end: float) -> dict | None:
    """The transcript segment a line was translated from: the one it overlaps most.

    Lines keep their segment's times, but a hand edit may shift them a little, so this
    looks at overlap rather than equality; segments are sorted, so only neighbours count.
    """
    starts, ordered = index
    best, best_overlap = None, 0.0
    i = bisect_right(starts, end)
    for segment in ordered[max(0, i - 8):i]:
        seg_start = number(segment["start"])
        seg_end = number(segment.get("end"))
        overlap = min(end, seg_end if seg_end is not None else seg_start) - max(start, seg_start)
        if overlap > best_overlap:
            best, best_overlap = segment, overlap
    return best


def derived_flags(fit: dict) -> set[str]:
    """Flags implied by the numbers, so a fit.json without a "flags" list still shows them."""
    flags = set()
    if (number(fit.get("borrowed_s")) or 0.0) > 0.005:
        flags.add("borrowed")
    if (number(fit.get("speed")) or 1.0) > 1.005:
        flags.add("sped_up")
    if (number(fit.get("trimmed_s")) or 0.0) > 0.005:
        flags.add("trimmed")
    return flags


def merge_lines(translation: dict, fit: dict, segments: list[dict]) -> list[DubLine]:
    """Translation lines with their fit figures and the confidence of their source segment."""
    fits = {line_key(f): f for f in fit.get("lines") or [] if isinstance(f, dict)}
    index = segment_index(segments)
    merged, seen = [], set()
    for line in [*(translation.get("lines") or []), *fits.values()]:
        if not isinstance(line, dict):
            continue
        key = line_key(line)
        if key in seen:
            continue
        seen.add(key)
        f = fits.get(key, {})
        start = number(line.get("start")) or number(f.get("start")) or 0.0
        end = number(line.get("end"))
        slot = number(f.get("slot_s"))
        end = end if end is not None else start + (slot or 0.0)
        flags = {str(flag) for flag in f.get("flags") or []} | derived_flags(f)
        if fit and key not in fits:
            flags.add("unvoiced")  # the mix had nothing to play for it (e.g. empty text)
        if line.get("full_text"):
            flags.add("condensed")
        if f.get("engine_speed"):
            flags.add("voice_faster")
        segment = source_segment(index, start, end) or {}
        logprob = number(segment.get("avg_logprob"))
        merged.append(DubLine(
            id=str(line.get("id") or f.get("id") or ""),
            speaker=str(line.get("speaker") or f.get("speaker") or NO_SPEAKER),
            start=start,
            end=end,
            source=str(line.get("source") or ""),
            text=str(line.get("text") or f.get("text") or ""),
            edited=bool(line.get("edited")),
            voice=str(f.get("voice") or ""),
            slot_s=slot,
            available_s=number(f.get("available_s")),
            natural_s=number(f.get("natural_s")),
            borrowed_s=number(f.get("borrowed_s")),
            speed=number(f.get("speed")),
            trimmed_s=number(f.get("trimmed_s")),
            played_s=number(f.get("played_s")),
            placed=key in fits,
            flags=[flag for flag in FLAG_LABELS if flag in flags]
            + sorted(flags - set(FLAG_LABELS)),
            low_confidence=bool(segment.get("low_confidence")),
            confidence_note=f"avg log-prob {logprob:.2f}" if logprob is not None else "",
            full_text=str(line.get("full_text") or ""),
            dropped_words=str((f.get("cut") or {}).get("dropped_words") or ""),
        ))
    return sorted(merged, key=lambda line: (line.start, line.id))


def language_of(path: str | Path) -> str:
    """work/{name}/{lang}/translation.json and fit.json share their folder: the language."""
    return Path(path).parent.name


def load_languages(translations: list, fits: list, segments: list[dict]) -> list[Language]:
    """One Language per translation, paired with the fit.json from the same folder."""
    fit_docs = {language_of(p): load_json(p, "mix") for p in fits}
    languages = []
    for path in translations:
        doc = load_json(path, "translate")
        code = language_of(path) or str(doc.get("target_language") or "")
        fit = fit_docs.get(code, {})
        languages.append(Language(
            code=str(doc.get("target_language") or code),
            backend=str(doc.get("backend") or ""),
            model=str(doc.get("model") or ""),
            lines=merge_lines(doc, fit, segments),
            summary=fit.get("summary") if isinstance(fit.get("summary"), dict) else {},
            loudness=fit.get("loudness") if isinstance(fit.get("loudness"), dict) else {},
            has_fit=code in fit_docs,
            voices=fit.get("voices") if isinstance(fit.get("voices"), dict) else {},
        ))
    return languages


def read_benchmarks(folder: str | Path | None) -> list[Timing]:
    """Snakemake's benchmark files; missing or half-written ones are left out, not fatal.

    The report may be built before every stage has run once (e.g. a re-run of one language),
    so an absent file is normal. With ``benchmark: repeat(...)`` a file has several rows;
    their mean time and peak memory are shown.
    """
    if not folder or not Path(folder).is_dir():
        return []
    timings = []
    for tsv in Path(folder).glob("*.tsv"):
        try:
            with open(tsv, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle, delimiter="\t"))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            log.warning("skipping benchmark %s: %s", tsv, error)
            continue
        seconds = [s for s in (number(r.get("s")) for r in rows) if s is not None]
        if not seconds:
            log.warning("skipping benchmark %s: no 's' column with a number", tsv)
            continue
        rss = [m for m in (number(r.get("max_rss")) for r in rows) if m is not None]
        timings.append(Timing(tsv.stem, sum(seconds) / len(seconds), max(rss) if rss else None))
    return sorted(timings, key=stage_rank)


def stage_rank(timing: Timing) -> tuple[int, str]:
    """Pipeline order (extract before transcribe ...), so the table reads like the graph."""
    base = timing.stage.split(".")[0]
    return (STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER), timing.stage)


def video_duration(transcript: dict, turns: list[Turn],
                   languages: list[Language]) -> tuple[float, bool]:
    """(seconds, estimated): transcript.json's duration, else the end of the last speech."""
    recorded = number(transcript.get("duration_s"))
    if recorded is not None and recorded > 0:
        return recorded, False
    ends = [t.end for t in turns]
    ends += [number(s.get("end")) or 0.0 for s in transcript.get("segments") or []]
    ends += [max(line.end, line.placed_end) for lang in languages for line in lang.lines]
    return max(ends, default=0.0), True


# --- formatting ---------------------------------------------------------------------------


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def clock(seconds: float, decimals: int = 1) -> str:
    """h:mm:ss.s for long films, m:ss.s otherwise: what a reviewer types into a player."""
    seconds = max(seconds, 0.0)
    minutes, secs = divmod(round(seconds, decimals), 60)
    hours, minutes = divmod(int(minutes), 60)
    width = 3 + decimals if decimals else 2
    secs_text = f"{secs:0{width}.{decimals}f}"
    return f"{hours}:{minutes:02d}:{secs_text}" if hours else f"{minutes}:{secs_text}"


def fmt(value: float | None, pattern: str = "{:.2f}", missing: str = "–") -> str:
    return pattern.format(value) if value is not None else missing


def speaker_order(turns: list[Turn], segments: list[dict], languages: list[Language]) -> list[str]:
    """Speakers by first appearance, so colours and rows follow the story, not the labels."""
    first: dict[str, float] = {}
    items = [(t.start, t.speaker) for t in turns]
    items += [(number(s.get("start")) or 0.0, s.get("speaker") or NO_SPEAKER) for s in segments]
    items += [(line.start, line.speaker) for lang in languages for line in lang.lines]
    for start, speaker in items:
        first[str(speaker)] = min(start, first.get(str(speaker), math.inf))
    return sorted(first, key=lambda s: (first[s], s))


def palette_css(speakers: list[str]) -> str:
    return "\n".join(f"i.c{i} {{ background: {PALETTE[i % len(PALETTE)]}; }}"
                     for i in range(min(len(speakers), len(PALETTE))))


def swatch(speaker: str, colours: dict[str, int]) -> str:
    i = colours.get(speaker)
    return f'<i class="sw c{i % len(PALETTE)}"></i>' if i is not None else ""


# --- the timeline plot --------------------------------------------------------------------


def panel_length(duration: float) -> float:
    """Seconds per stacked panel: one panel for short clips, at most MAX_PANELS for a film."""
    if duration <= SINGLE_PANEL_MAX_S:
        return max(duration, 1.0)
    wanted = max(duration / MAX_PANELS, MIN_PANEL_S)
    return float(math.ceil(wanted / 300.0) * 300)


def tick_step(span: float) -> float:
    return next((s for s in TICK_STEPS_S if span / s <= 12), TICK_STEPS_S[-1])


Bar = tuple[float, float, int, str, str]  # start, end, row, kind, colour


def timeline_bars(turns: list[Turn], languages: list[Language], speakers: list[str]
                  ) -> tuple[list[str], list[Bar]]:
    """Row labels (top to bottom) and every bar: source speakers first, then each language's.

    Row numbers count from the bottom, as matplotlib's y axis does.
    """
    labels = [f"source  {s}" for s in speakers]
    labels += [f"{lang.code}  {s}" for lang in languages for s in speakers]
    row_of = {s: i for i, s in enumerate(speakers)}
    colour_of = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(speakers)}
    top = len(labels) - 1
    bars = [(t.start, t.end, top - row_of[t.speaker], "src", colour_of[t.speaker])
            for t in turns if t.speaker in row_of]
    for g, lang in enumerate(languages, 1):
        for line in lang.lines:
            if not line.placed or line.speaker not in row_of:
                continue
            kind = "tr" if "trimmed" in line.flags else "sp" if "sped_up" in line.flags else "ok"
            end = max(line.placed_end, line.start + 0.05)  # a zero-length line stays visible
            bars.append((line.start, end, top - g * len(speakers) - row_of[line.speaker], kind,
                         colour_of[line.speaker]))
    return labels, bars


# Source speech pale, dub lines solid; sped-up lines hatched, trimmed ones cross-hatched in red.
FILL_STYLES = {"src": {"alpha": 0.45, "linewidth": 0}, "ok": {"linewidth": 0},
               "sp": {"linewidth": 0}, "tr": {"linewidth": 0}}
MARK_STYLES = {"sp": {"edgecolors": "#222222", "hatch": "////", "linewidths": 0.6},
               "tr": {"edgecolors": "#d00000", "hatch": "xxxx", "linewidths": 1.2}}


def rectangles(bars: list[Bar]) -> np.ndarray:
    """(n, 4, 2) corner array; numpy, because a film has thousands of bars per panel."""
    spans = np.array([(a, b, y) for a, b, y, _, _ in bars], dtype=float).reshape(-1, 3)
    a, b, low, high = spans[:, 0], spans[:, 1], spans[:, 2] - 0.38, spans[:, 2] + 0.38
    return np.stack([np.stack(corner, axis=1) for corner in
                     ((a, low), (a, high), (b, high), (b, low))], axis=1)


def outlines(corners: np.ndarray) -> MplPath:
    """All bars as one compound path, so a panel's hatching is one fill, not thousands."""
    closed = np.concatenate([corners, corners[:, :1]], axis=1).reshape(-1, 2)
    codes = [MplPath.MOVETO, MplPath.LINETO, MplPath.LINETO, MplPath.LINETO, MplPath.CLOSEPOLY]
    return MplPath(closed, np.tile(np.array(codes, dtype=MplPath.code_type), len(corners)))


def timeline_png(turns: list[Turn], languages: list[Language], speakers: list[str],
                 duration: float) -> bytes:
    """Who speaks when, source (RTTM) above each dub's lines as placed, as PNG bytes.

    Uses a bare Figure with the Agg canvas (no pyplot): no global state, no GUI backend,
    nothing left open between calls. Bars go in one collection (and one hatched path) per
    panel and style: thousands of separate artists made a film's plot take seconds.
    """
    labels, bars = timeline_bars(turns, languages, speakers)
    span = panel_length(duration)
    panels = max(1, math.ceil(duration / span - 1e-9))
    row_h, panel_pad, top, bottom = 0.17, 0.42, 0.4, 0.3  # inches
    axes_h = len(labels) * row_h
    height = top + bottom + panels * axes_h + (panels - 1) * panel_pad
    figure = Figure(figsize=(12.5, height), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    for index, ax in enumerate(axes):
        t0, t1 = index * span, (index + 1) * span
        for kind, style in FILL_STYLES.items():
            chosen = [b for b in bars if b[3] == kind and b[1] > t0 and b[0] < t1]
            if chosen:
                corners = rectangles(chosen)
                ax.add_collection(PolyCollection(corners, facecolors=[b[4] for b in chosen],
                                                 **style), autolim=False)
                if kind in MARK_STYLES:
                    marks = PathCollection([outlines(corners)], facecolors="none",
                                           **MARK_STYLES[kind])
                    ax.add_collection(marks, autolim=False)
        for boundary in range(len(speakers), len(labels), max(len(speakers), 1)):
            ax.axhline(len(labels) - boundary - 0.5, color="#555555", linewidth=0.6)
        if duration < t1:
            ax.axvspan(duration, t1, color="#eeeeee", zorder=0)
        draw_frame(ax, labels, t0, t1)
    figure.legend(handles=legend_handles(), loc="upper center", ncol=4, fontsize=8,
                  frameon=False, bbox_to_anchor=(0.5, 1.0))
    label_in = 0.2 + 0.058 * max(map(len, labels), default=0)  # 7.5 pt text, roughly
    figure.subplots_adjust(left=min(label_in / 12.5, 0.35), right=0.975, top=1 - top / height,
                           bottom=bottom / height, hspace=panel_pad / axes_h)
    return png_bytes(figure)


def draw_frame(ax, labels: list[str], t0: float, t1: float) -> None:
    """Row labels, time labels and grid as plain artists instead of matplotlib's axes.

    Its Tick objects cost milliseconds each and a film has hundreds of them across its
    panels; a few texts and two line collections per panel draw the same picture. Rows
    have a fixed height in inches, so offsets in row units look the same in every plot.
    """
    bottom, top = -0.6, len(labels) - 0.4
    ax.set_axis_off()
    ax.set_xlim(t0, t1)
    ax.set_ylim(bottom, top)
    for y, label in enumerate(reversed(labels)):
        ax.text(-0.006, y, label, transform=ax.get_yaxis_transform(), ha="right",
                va="center", fontsize=7.5)
    step = tick_step(t1 - t0)
    ticks = [t0 + i * step for i in range(int((t1 - t0) / step + 1e-9) + 1)]
    grid = LineCollection([[(t, bottom), (t, top)] for t in ticks], colors="#dddddd",
                          linewidths=0.5, zorder=0)
    axis = LineCollection([[(t, bottom), (t, bottom - 0.25)] for t in ticks]
                          + [[(t0, bottom), (t1, bottom)]], colors="#222222", linewidths=0.8,
                          clip_on=False)
    ax.add_collection(grid, autolim=False)
    ax.add_collection(axis, autolim=False)
    for t in ticks:
        ax.text(t, bottom - 0.4, clock(t, 0), ha="center", va="top", fontsize=7.5)


def png_bytes(figure: Figure) -> bytes:
    """The figure as a 64-colour PNG: flat bars and text lose nothing visible, and the
    page of a film with many speakers shrinks about threefold."""
    canvas = figure.canvas
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    out = io.BytesIO()
    image.quantize(colors=64, method=Image.Quantize.FASTOCTREE).save(out, format="PNG")
    return out.getvalue()


def legend_handles() -> list[Patch]:
    return [
        Patch(facecolor="#888888", alpha=0.45, label="source speech (RTTM)"),
        Patch(facecolor="#888888", label="dub line as placed"),
        Patch(facecolor="#888888", edgecolor="#222222", hatch="////", label="sped up"),
        Patch(facecolor="#888888", edgecolor="#d00000", hatch="xxxx", linewidth=1.2,
              label="trimmed"),
    ]


# --- the page -----------------------------------------------------------------------------


def facts_html(name: str, transcript: dict, turns: list[Turn], languages: list[Language],
               duration: float, estimated: bool, streams: dict | None = None) -> str:
    source = str(transcript.get("language") or "unknown")
    probability = number(transcript.get("language_probability"))
    source_text = f"{source} — {language_name(source)}"
    if probability is not None:
        source_text += f" (p = {probability:.2f})"
    targets = ", ".join(f"{lang.code} — {language_name(lang.code)}"
                        for lang in languages) or "none"
    named = {t.speaker for t in turns} - {NO_SPEAKER}
    length = f"{clock(duration)} ({duration:.1f} s)"
    if estimated:
        length += ", estimated from the last speech: transcript.json has no duration_s"
    segments = transcript.get("segments") or []
    low = sum(1 for s in segments if s.get("low_confidence"))
    facts = [
        ("Video", name),
        ("Source language", source_text),
        ("Target languages", targets),
        ("Speakers", str(len(named)) if named else "not labelled (no diarization)"),
        ("Duration", length),
        ("Source segments", f"{len(segments)} ({low} low-confidence)"),
    ]
    dubbed = (streams or {}).get("dubbed")
    if dubbed:
        facts.insert(2, ("Dubbed audio stream", (
            f"#{dubbed.get('index')} {dubbed.get('codec')}, {dubbed.get('channels')} ch, "
            f"{dubbed.get('language') or 'untagged'}"
            + (f" '{dubbed['title']}'" if dubbed.get("title") else "")
            + f": {dubbed.get('why')} (of {streams.get('audio_streams')} audio streams)")))
    return "<dl class=\"facts\">" + "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"


def timeline_html(turns: list[Turn], languages: list[Language], speakers: list[str],
                  duration: float) -> str:
    if duration <= 0 or not speakers:
        return '<p class="note">No speech was found, so there is no timeline to draw.</p>'
    png = base64.b64encode(timeline_png(turns, languages, speakers, duration)).decode("ascii")
    span = panel_length(duration)
    note = ("Each row is one speaker: first the source speech from the diarization, then "
            "each target language's dub lines where the mix placed them.")
    if span < duration:
        note += f" The video is cut into panels of {clock(span, 0)}, read top to bottom."
    return (f'<p class="note">{esc(note)}</p>'
            f'<img class="plot" alt="speaker timeline" src="data:image/png;base64,{png}">')


def breakable(spec: str) -> str:
    """A voice spec escaped, with line-break chances after its : + @ and commas, so a long
    blend wraps between its parts instead of widening the table."""
    return "".join(f"{esc(ch)}<wbr>" if ch in ":+@," else esc(ch) for ch in spec)


def line_row(line: DubLine, colours: dict[str, int]) -> str:
    """One table row; kept to bare cells because a film has thousands of them."""
    marks = (("sp", "sped_up" in line.flags), ("tr", "trimmed" in line.flags),
             ("uv", "unvoiced" in line.flags), ("lc", line.low_confidence))
    classes = [c for c, hit in marks if hit]
    if "sp" in classes and "tr" in classes:
        classes.remove("sp")  # one highlight per row: trimmed is the stronger warning
    row_class = f' class="{" ".join(classes)}"' if classes else ""
    source = esc(line.source)
    source_cell = "<td class=\"x\">"
    if line.low_confidence:
        title = esc(f"low ASR confidence ({line.confidence_note})" if line.confidence_note
                    else "low ASR confidence")
        source_cell = f'<td class="x lc" title="{title}"><b class="k k-lc">low conf</b>'
    edited = '<b class="k k-ed">edited</b>' if line.edited else ""
    if line.full_text:  # the whole translation the voiced text was condensed from
        edited += f'<i title="full translation">{esc(line.full_text)}</i><br>'
    if line.dropped_words:
        edited += f'<b class="k k-tr" title="cut at a pause">lost: {esc(line.dropped_words)}</b> '
    over = (line.natural_s is not None and line.slot_s is not None
            and line.natural_s > line.slot_s + 1e-3)
    length_cell = (f'<td class="n{" over" if over else ""}">'
                   f'{fmt(line.natural_s)} / {fmt(line.slot_s)}</td>')
    flags = "".join(f'<b class="k k-{FLAG_LABELS[f][0]}">{FLAG_LABELS[f][1]}</b>'
                    if f in FLAG_LABELS else f'<b class="k k-bo">{esc(f)}</b>' for f in line.flags)
    borrowed = fmt(line.borrowed_s) if line.borrowed_s else ""
    # ×1.00 on every untouched line would only hide the ones that were sped up.
    speed = fmt(line.speed, "×{:.2f}") if line.speed and abs(line.speed - 1) >= 0.005 else ""
    return (f"<tr{row_class}><td>{esc(line.id)}</td>"
            f"<td>{swatch(line.speaker, colours)}{esc(line.speaker)}</td>"
            f'<td class="t">{clock(line.start)}–{clock(line.end)}</td>'
            f"{source_cell}{source}</td><td class=\"x\">{edited}{esc(line.text)}</td>"
            f"<td>{breakable(line.voice)}</td>{length_cell}<td class=\"n\">{borrowed}</td>"
            f'<td class="n">{speed}</td><td>{flags}</td></tr>')


def summary_counts(lang: Language) -> dict:
    """fit.json's summary where present, else counted from the lines themselves.

    fit.json counts only voiced lines ("lines"); the table has every translated line.
    """
    speeds = [line.speed for line in lang.lines if line.speed is not None]
    counted = {
        "lines": sum(line.placed for line in lang.lines),
        "borrowed": sum("borrowed" in line.flags for line in lang.lines),
        "sped_up": sum("sped_up" in line.flags for line in lang.lines),
        "trimmed": sum("trimmed" in line.flags for line in lang.lines),
        "max_speed": max(speeds, default=None),
    }
    return {key: lang.summary.get(key, value) if lang.summary.get(key) is not None else value
            for key, value in counted.items()}


def voices_html(voices: dict, colours: dict[str, int]) -> str:
    """Who dubs whom: each speaker's pitch in the source beside their dub voice's."""
    if not voices:
        return ""
    rows = []
    for speaker, v in sorted(voices.items()):
        source, dub = number(v.get("source_f0_hz")), number(v.get("voice_f0_hz"))
        apart = (f"{abs(math.log2(dub / source)):.2f}" if source and dub else "–")
        rows.append(f"<tr><td>{swatch(speaker, colours)}{esc(speaker)}</td>"
                    f'<td class="n">{fmt(source, "{:.0f}")}</td><td>{esc(str(v.get("voice")))}</td>'
                    f'<td class="n">{fmt(dub, "{:.0f}")}</td><td class="n">{apart}</td></tr>')
    return ('<table><thead><tr><th>speaker</th><th class="n">source F0 Hz</th><th>dub voice</th>'
            '<th class="n">voice F0 Hz</th><th class="n">octaves apart</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def language_html(lang: Language, colours: dict[str, int]) -> str:
    code = esc(lang.code)
    counts = summary_counts(lang)
    max_speed = number(counts["max_speed"])
    low = sum(line.low_confidence for line in lang.lines)
    model = " / ".join(x for x in (lang.backend, lang.model) if x)
    sped_up = number(counts["sped_up"])
    facts = [f"{len(lang.lines)} lines", f"translated by {model}" if model else "",
             f"{counts['lines']} voiced" if lang.has_fit else "",
             f"{counts['borrowed']} borrowed silence",
             f"{counts['sped_up']} sped up"
             + (f" (max ×{max_speed:.2f})" if max_speed is not None and sped_up else ""),
             f"{counts['trimmed']} trimmed", f"{low} from low-confidence source"]
    parts = [
        f'<section id="lang-{code}"><h2>{code} — {esc(language_name(lang.code))}</h2>',
        f'<p class="note">{esc(" · ".join(fact for fact in facts if fact))}</p>',
    ]
    if not lang.has_fit:
        parts.append('<p class="note">No fit.json for this language yet: the mix stage has not '
                     'run, so voice, timing and flags are empty.</p>')
    parts.append(voices_html(lang.voices, colours))
    parts.append(
        f'<input type="checkbox" class="only" id="only-{code}">'
        f'<label class="only" for="only-{code}"> show only lines to check '
        f'(sped up, trimmed, not voiced, low-confidence source)</label>'
        '<div class="wrap"><table class="lines"><thead><tr><th>id</th><th>speaker</th>'
        '<th>time</th><th>source</th><th>translation</th><th>voice</th>'
        '<th class="n" title="natural length of the voiced line / length of its slot">'
        'natural / slot s</th><th class="n">borrowed s</th><th class="n">speed</th>'
        '<th>flags</th></tr></thead><tbody>'
    )
    parts += [line_row(line, colours) for line in lang.lines]
    parts.append("</tbody></table></div></section>")
    return "\n".join(parts)


def loudness_verdict(loudness: dict) -> tuple[str, str]:
    """(css class, text): pass needs output within ±1 LU of target and true peak ≤ limit."""
    out_i, target = number(loudness.get("output_i")), number(loudness.get("target_lufs"))
    out_tp, limit = number(loudness.get("output_tp")), number(loudness.get("true_peak_db"))
    problems, unknown = [], []
    if out_i is None or target is None:
        unknown.append("loudness")
    elif abs(out_i - target) > LOUDNESS_TOLERANCE_LU + 1e-9:
        problems.append(f"{out_i - target:+.1f} LU off target")
    if out_tp is None or limit is None:
        unknown.append("true peak")
    elif out_tp > limit + 1e-9:
        problems.append(f"true peak {out_tp - limit:+.1f} dB over limit")
    if problems:
        return "fail", "✗ fail: " + ", ".join(problems)
    if unknown:
        return "na", "not measured: " + " and ".join(unknown)
    return "pass", "✓ pass"


def loudness_html(languages: list[Language]) -> str:
    if not languages:
        return '<p class="note">No target languages, so no dub tracks to measure.</p>'
    rows = []
    for lang in languages:
        loud = lang.loudness
        verdict_class, verdict = loudness_verdict(loud)
        cells = [fmt(number(loud.get(k)), "{:.1f}") for k in
                 ("input_i", "output_i", "target_lufs", "output_tp", "true_peak_db")]
        rows.append(f"<tr><td>{esc(lang.code)}</td>"
                    + "".join(f'<td class="n">{c}</td>' for c in cells)
                    + f'<td class="{verdict_class}">{esc(verdict)}</td></tr>')
    return ('<p class="note">Integrated loudness (EBU R128) of each dub track before and after '
            f'normalisation; pass = output within ±{LOUDNESS_TOLERANCE_LU:g} LU of the target and '
            'true peak at or below the limit.</p>'
            '<table><thead><tr><th>language</th><th class="n">input LUFS</th>'
            '<th class="n">output LUFS</th><th class="n">target LUFS</th>'
            '<th class="n">true peak dBTP</th><th class="n">limit dBTP</th><th>result</th>'
            '</tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def timings_html(timings: list[Timing], duration: float) -> str:
    if not timings:
        return ('<p class="note">No benchmark files yet (benchmarks/&lt;name&gt;/*.tsv are '
                'written when each stage finishes).</p>')
    rows = []
    for t in timings:
        rtf = fmt(t.seconds / duration, "{:.3f}") if duration > 0 else "–"
        rss = fmt(t.max_rss_mb, "{:.0f}")
        rows.append(f'<tr><td>{esc(t.stage)}</td><td class="n">{t.seconds:.1f}</td>'
                    f'<td class="n">{rss}</td><td class="n">{rtf}</td></tr>')
    total = sum(t.seconds for t in timings)
    total_rtf = fmt(total / duration, "{:.3f}") if duration > 0 else "–"
    rows.append(f'<tr><th>total</th><th class="n">{total:.1f}</th><th></th>'
                f'<th class="n">{total_rtf}</th></tr>')
    return ('<p class="note">Wall-clock seconds and peak memory from Snakemake\'s benchmark '
            'files; RTF = seconds / video duration (below 1 is faster than real time).</p>'
            '<table><thead><tr><th>stage</th><th class="n">seconds</th>'
            '<th class="n">max RSS MB</th><th class="n">RTF</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def separation_html(separation: dict | None) -> str:
    """How much of the original dialogue the bed under the dub still holds."""
    if not separation:
        return ('<p class="note">Dialogue separation is off (mix.separation: none): the dub '
                'plays over the original mix, ducked under each line, and the original voices '
                'play between lines.</p>')
    bleed = number(separation.get("bleed_db"))
    figure = (f"{bleed:.1f} dB relative to the source's" if bleed is not None
              else "not measured (no speech found in the first minutes)")
    return (f'<p class="note">Dialogue separation: {esc(str(separation.get("method")))}, '
            f'RTF {fmt(number(separation.get("rtf")), "{:.3f}")}. Speech left in the bed '
            f'under the dub: {esc(figure)} (the separator run again on the bed; lower is '
            f'better, below -20 dB is hard to hear under a dub).</p>')


def render(name: str, transcript: dict, turns: list[Turn], languages: list[Language],
           timings: list[Timing], separation: dict | None = None,
           streams: dict | None = None) -> str:
    """The whole page as one string; pure, so tests need no files but the template."""
    segments = transcript.get("segments") or []
    speakers = speaker_order(turns, segments, languages)
    if not turns:
        # An empty RTTM (diarization off or failed quietly): fall back to the transcript.
        turns = [Turn(number(s.get("start")) or 0.0, number(s.get("end")) or 0.0,
                      str(s.get("speaker") or NO_SPEAKER)) for s in segments]
    duration, estimated = video_duration(transcript, turns, languages)
    colours = {speaker: i for i, speaker in enumerate(speakers)}
    template = string.Template(TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute(
        title=esc(f"{name} — dubflow report"),
        heading=esc(f"{name} — dub QA report"),
        palette=palette_css(speakers),
        facts=facts_html(name, transcript, turns, languages, duration, estimated, streams),
        nav="".join(f'<a href="#lang-{esc(lang.code)}">{esc(lang.code)} lines</a>'
                    for lang in languages),
        timeline=timeline_html(turns, languages, speakers, duration),
        languages="\n".join(language_html(lang, colours) for lang in languages),
        loudness=loudness_html(languages) + separation_html(separation),
        timings=timings_html(timings, duration),
    )


def build(name: str, transcript: str | Path, rttm: str | Path, translations: list,
          fits: list, benchmarks_dir: str | Path | None, output_html: str | Path,
          separation: list | None = None, streams: str | Path | None = None) -> None:
    """Read every stage's output for one video and write out/{name}.report.html."""
    transcript_doc = load_json(transcript, "transcribe")
    if not Path(rttm).is_file():
        raise InputError(
            f"{rttm} is missing, so the report stage cannot draw who speaks when; run the "
            f"diarize stage first (snakemake {rttm})"
        )
    turns = read_rttm(rttm)
    languages = load_languages(translations, fits, transcript_doc.get("segments") or [])
    timings = read_benchmarks(benchmarks_dir)
    separation_doc = load_json(separation[0], "separate") if separation else None
    streams_doc = load_json(streams, "extract") if streams else None
    page = render(name, transcript_doc, turns, languages, timings, separation_doc,
                  streams_doc)
    write_text(output_html, page)
    log.info("%s: %d languages, %d lines, %d benchmark files, %.0f kB",
             output_html, len(languages), sum(len(lang.lines) for lang in languages),
             len(timings), len(page.encode("utf-8")) / 1024)


if "snakemake" in globals():
    from dubflow.rule_runner import run_rule

    sm = snakemake  # noqa: F821 - injected by Snakemake's script: directive
    run_rule(
        sm,
        STAGE,
        build,
        name=sm.wildcards.name,
        transcript=sm.input.transcript,
        rttm=sm.input.rttm,
        translations=list(sm.input.translations),
        fits=list(sm.input.fits),
        benchmarks_dir=sm.params.benchmarks_dir,
        output_html=sm.output.html,
        separation=list(sm.input.separation),
        streams=sm.input.streams,
    )
