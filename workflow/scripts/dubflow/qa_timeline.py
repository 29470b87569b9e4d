"""The QA page's speaker timeline: who speaks when in the source, and where each dub line
was placed, drawn once as a PNG.

A two-hour film has ~1,500 lines per language; one long axis would squeeze a line into a
pixel, so the plot is split into stacked panels, and bars are drawn as one collection per
panel and style (thousands of separate artists made a film's plot take seconds).
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.path import Path as MplPath
from PIL import Image

from dubflow.qa_data import Language, clock
from dubflow.rttm import Turn

# matplotlib's tab10, written out so the table swatches match the plot without asking it.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SINGLE_PANEL_MAX_S = 360.0
MIN_PANEL_S = 300.0
MAX_PANELS = 12
TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def panel_length(duration: float) -> float:
    """Seconds per stacked panel: one panel for short clips, at most MAX_PANELS for a film."""
    if duration <= SINGLE_PANEL_MAX_S:
        return max(duration, 1.0)
    wanted = max(duration / MAX_PANELS, MIN_PANEL_S)
    return float(math.ceil(wanted / 300.0) * 300)


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
    nothing left open between calls.
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
    step = next((s for s in TICK_STEPS_S if (t1 - t0) / s <= 12), TICK_STEPS_S[-1])
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
    figure.canvas.draw()
    image = Image.fromarray(np.asarray(figure.canvas.buffer_rgba())).convert("RGB")
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
