"""Everything the stages ask of ffmpeg, declared once: filters, their options, encoders, muxers.

A distribution ffmpeg (Debian 12 ships 5.1) has the same filter *names* as the pinned
build but not always the same options: 5.1's ``ebur128`` has no ``framelog=quiet``. A check
of names alone passed such a binary, and the run then failed an hour in, at the mix.

So the stages build every filter and codec argument through :func:`filter_` and
:func:`codec`, which refuse anything not declared here, and preflight
(``ffmpeg_safe.check_capabilities``) checks the chosen binary against exactly these
declarations. A new filter option cannot reach ffmpeg without being declared, and once
declared it is checked before any job runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The oldest ffmpeg the stages are written for and tested with (Debian 12's 5.1).
MIN_VERSION = (5, 1)


@dataclass(frozen=True)
class Need:
    """One filter, encoder or muxer: the options the stages set, with the values they use
    when the option takes named constants (``None``: any value of the option's type)."""

    options: dict[str, frozenset[str] | None] = field(default_factory=dict)
    stages: tuple[str, ...] = ("mix",)
    #: the option a leading positional value sets (``volume=3dB`` sets ``volume``)
    positional: str | None = None


def _need(stages: tuple[str, ...], positional: str | None = None, **options) -> Need:
    return Need({key: None if values is None else frozenset(values)
                 for key, values in options.items()}, stages, positional)


FILTERS: dict[str, Need] = {
    "aformat": _need(("mix",), sample_fmts=None, sample_rates=None, channel_layouts=None),
    "aresample": _need(("mix",), positional="sample_rate"),
    "pan": _need(("mix",), positional="args"),
    "amultiply": _need(("mix",)),
    "amix": _need(("mix",), inputs=None, normalize=None, duration={"first"}),
    "asplit": _need(("mix",), positional="outputs"),
    "anull": _need(("mix",)),
    "anullsink": _need(("mix",)),
    "volume": _need(("mix",), positional="volume"),
    "alimiter": _need(("mix",), limit=None, attack=None, release=None, level=None,
                      latency=None),
    # framelog=verbose: the per-frame lines go to the verbose log level, which the runner
    # does not print, and only the summary remains (framelog=quiet says the same from 6.1
    # on, but 5.1 does not know it).
    "ebur128": _need(("mix",), peak={"true", "sample"}, framelog={"verbose"}),
    # the bed's speech band, dipped further under lines (mix.band_duck_db)
    "apad": _need(("mix",), pad_len=None),
    "firequalizer": _need(("mix",), delay=None, gain_entry=None),
    "atrim": _need(("mix",), start_sample=None, end_sample=None),
    "asetpts": _need(("mix",), positional="expr"),
    "rubberband": _need(("mix",), tempo=None),
    "atempo": _need(("mix",), tempo=None),
    # the review app's browser proxy (dubflow/review/media.py)
    "scale": _need(("review",), w=None, h=None),
}

ENCODERS: dict[str, Need] = {
    "pcm_s16le": _need(("extract",)),
    "pcm_s24le": _need(("extract", "mix")),
    "pcm_f32le": _need(("mix",)),
    "aac": _need(("mix",), aac_coder={"fast"}, aac_is=None),  # aac_is: a boolean
    "srt": _need(("mux",)),
    # the review app's browser proxy: VP8 + Opus in WebM, which every Chromium plays
    "libvpx": _need(("review",), deadline={"realtime"}, speed=None),  # speed: cpu-used
    "libopus": _need(("review", "report_clips")),
}

MUXERS: dict[str, Need] = {
    "wav": _need(("extract", "mix"), rf64={"auto"}),
    # free bytes before the first cluster, for mkv_languages' BCP-47 tags (mux)
    "matroska": _need(("mix", "mux"), metadata_header_padding=None),
    "null": _need(("mix",)),
    # the dub track's pieces after the first (dubflow/mix_track.py)
    "adts": _need(("mix",)),
    "webm": _need(("review", "report_clips")),
    # the QA page's per-line clips: one encode cut into files (dubflow/qa_clips.py)
    "segment": _need(("report_clips",), segment_format=None, segment_times=None,
                     segment_time=None, reset_timestamps=None),
}

#: Input formats named with ``-f`` (the others are probed).
DEMUXERS: dict[str, Need] = {
    # joins the dub track's pieces without encoding (dubflow/mix_track.py)
    "concat": _need(("mix",)),
    "aac": _need(("mix",)),  # ADTS
}

#: Filters a build may lack: the stage then uses the fallback (and logs it).
OPTIONAL_FILTERS = {"rubberband": "atempo"}


def _format(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def filter_(name: str, *positional: object, **options: object) -> str:
    """One filter of a graph, e.g. ``filter_("ebur128", peak="true", framelog="verbose")``.

    Refuses a filter, option or named value that is not declared in FILTERS, so the
    preflight check and the graphs cannot drift apart.
    """
    need = _declared("filter", name, options)
    if len(positional) > (1 if need.positional else 0):
        raise KeyError(f"ffmpeg filter {name!r} takes no positional value here")
    args = [_format(value) for value in positional]
    args += [f"{key}={_format(value)}" for key, value in options.items()]
    return name + ("=" + ":".join(args) if args else "")


def codec(name: str, stream: str = "a", **options: object) -> list[str]:
    """``-c:a NAME -option value ...`` for a declared encoder."""
    _declared("encoder", name, options)
    return [f"-c:{stream}", name, *_option_args(options)]


def muxer(name: str, **options: object) -> list[str]:
    """``-f NAME -option value ...`` for a declared muxer."""
    _declared("muxer", name, options)
    return ["-f", name, *_option_args(options)]


def demuxer(name: str) -> list[str]:
    """``-f NAME`` for a declared input format."""
    _declared("demuxer", name, {})
    return ["-f", name]


def _option_args(options: dict[str, object]) -> list[str]:
    return [arg for key, value in options.items() for arg in (f"-{key}", _format(value))]


def _declared(kind: str, name: str, options: dict[str, object]) -> Need:
    """``name``'s declaration; KeyError for a name, option or named value not declared."""
    need = all_needs()[kind].get(name)
    if need is None:
        table = f"{kind.upper()}S"  # FILTERS, ENCODERS, MUXERS, DEMUXERS
        raise KeyError(f"ffmpeg {kind} {name!r} is not declared in ffmpeg_needs.{table}")
    for key, value in options.items():
        if key not in need.options:
            raise KeyError(f"option {key!r} of ffmpeg {kind} {name!r} is not declared in "
                           f"ffmpeg_needs")
        allowed = need.options[key]
        if allowed is not None and _format(value) not in allowed:
            raise KeyError(f"value {value!r} of option {key!r} of ffmpeg {kind} {name!r} is "
                           f"not declared in ffmpeg_needs (declared: {sorted(allowed)})")
    return need


#: Options of every muxer (ffmpeg's AVFormatContext options), which ``-h muxer=NAME`` does
#: not list: preflight looks them up in ``-h full`` instead.
FORMAT_OPTIONS = frozenset({"metadata_header_padding"})


def all_needs() -> dict[str, dict[str, Need]]:
    """Every declaration by kind, in the words ffmpeg's ``-h`` uses."""
    return {"filter": FILTERS, "encoder": ENCODERS, "muxer": MUXERS, "demuxer": DEMUXERS}


def fingerprint(needs: dict[str, dict[str, Need]]) -> str:
    """The declarations as one canonical string (sets sorted), to key a cached check."""
    return repr(sorted(
        (kind, name, need.positional, need.stages,
         sorted((key, sorted(values) if values else None) for key, values in need.options.items()))
        for kind, table in needs.items() for name, need in table.items()))
