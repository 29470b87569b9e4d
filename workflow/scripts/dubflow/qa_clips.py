"""The QA page's per-line audio: a folder of small Opus clips beside the page.

A reviewer wants to hear a line, the source and the dub, without scrubbing through the
mkv. The page is opened from ``out/`` as a file (no server), so the clips are files next
to it (``out/<name>.report/``), linked by relative URLs; embedding them as data URIs
would make a film's page ~50 MB that the browser decodes before showing anything.
Each clip is mono Opus in WebM (what Chromium, Firefox and Safari all play), a few KB.

Cutting 1,500 lines with one ffmpeg each would start 1,500 processes. Instead the clips
of one audio file are read with soundfile (a seek per clip, nothing decoded in between),
laid end to end with a little silence between them, encoded once, and cut back apart by
ffmpeg's segment muxer at the middle of each silence: one ffmpeg per audio file (per
batch of ``BATCH_S`` seconds, which bounds the temporary WAV for a film). The cuts fall
on 20 ms Opus packets inside the silence, so no clip loses speech and each decodes on
its own (an Opus decoder joining mid-stream settles within the silence).

Snakemake deletes the folder before the job runs again, so encoded clips are also kept in
a cache (``report.clips_cache_dir``) under a hash of their samples and encoder settings:
after a one-line edit only the clips whose audio changed are encoded again (the source
clips never are), which took the job from 10 s to about 1 s on a 10-minute video.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from dubflow.atomic import atomic_dir, atomic_path, link_or_copy
from dubflow.errors import InputError
from dubflow.ffmpeg_needs import codec, muxer
from dubflow.ffmpeg_safe import file_arg, run_ffmpeg
from dubflow.qa_data import MANIFEST, Language

STAGE = "report_clips"
PAD_BEFORE_S = 0.15  # a clip starts a little before its line, so its first word is whole
PAD_AFTER_S = 0.3  # and ends a little after: speech trails past a segment's last word
GAP_S = 0.12  # silence between clips in the encoded stream; cut in its middle
BATCH_S = 1200.0  # audio per ffmpeg call: at most ~115 MB of temporary 48 kHz mono WAV
#: source clips come from the 16 kHz analysis audio (speech only); dub clips carry the
#: music and effects bed too, so they get a little more
BITRATE = {"source": "16k", "dub": "24k"}
#: libopus's default (10) encodes a 10-minute dub's clips in ~10 s of CPU; 5 in ~3 s, and
#: at these bitrates a reviewer hears no difference
COMPLEXITY = 5
#: bump when the encoding changes, so older cached clips are not reused
CLIPS_FORMAT = "dubflow-clip-1"


@dataclass(frozen=True)
class Clip:
    file: str  # name inside the clips folder
    start: float
    end: float


def prefix_for(code: str) -> str:
    """A language code as a file-name prefix (codes come from translation.json)."""
    return re.sub(r"[^a-z0-9-]", "_", code.lower()) or "dub"


def plan(languages: list[Language]) -> tuple[dict[str, list[Clip]], dict]:
    """The clips to cut from each audio ("source", then each language's dub) and the
    manifest the page reads: language -> line key -> {"source": file, "dub": file}.

    Lines of several languages share their source segment, so a source span is cut once.
    A line the mix did not place has no dub clip.
    """
    spans: dict[tuple[float, float], Clip] = {}
    cuts: dict[str, list[Clip]] = {"source": []}
    manifest: dict[str, dict] = {}
    for lang in languages:
        prefix = prefix_for(lang.code)
        dubs = cuts.setdefault(lang.code, [])
        entries = manifest.setdefault(lang.code, {})
        for line in lang.lines:
            span = (round(max(line.start - PAD_BEFORE_S, 0.0), 3),
                    round(max(line.end, line.start) + PAD_AFTER_S, 3))
            if span not in spans:
                spans[span] = Clip(f"source-{len(spans) + 1:05d}.webm", *span)
                cuts["source"].append(spans[span])
            entry = {"source": spans[span].file}
            if line.placed:
                start = line.played_start if line.played_start is not None else line.start
                end = start + (line.placed_end - line.start)
                dub = Clip(f"{prefix}-{len(dubs) + 1:05d}.webm",
                           round(max(start - PAD_BEFORE_S, 0.0), 3), round(end + PAD_AFTER_S, 3))
                dubs.append(dub)
                entry["dub"] = dub.file
            entries[line.key] = entry
    return cuts, manifest


def clip_key(samples: np.ndarray, rate: int, bitrate: str) -> str:
    """sha256 of everything an encoded clip depends on."""
    digest = hashlib.sha256(f"{CLIPS_FORMAT}|{rate}|{bitrate}|{COMPLEXITY}|".encode())
    digest.update(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    return digest.hexdigest()


def cut(audio: str | Path, clips: list[Clip], folder: Path, bitrate: str,
        ffmpeg: dict | None = None, cache: Path | None = None) -> int:
    """Write every clip of one audio file into ``folder`` (names from the plan), taking
    those already in ``cache`` from it; returns how many were encoded."""
    try:
        handle = sf.SoundFile(str(audio))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise InputError(f"{audio} is not a readable WAV ({error}), so the report's clips "
                         f"cannot be cut from it; delete it and re-run") from None
    encoded = 0
    with handle:
        rate = handle.samplerate
        silence = np.zeros(round(GAP_S / 2 * rate), dtype=np.float32)
        todo: list[tuple[Clip, Path | None]] = []
        stream, edges, length = folder / ".clips.wav", [], 0
        joined = None
        for number, clip in enumerate(clips):
            handle.seek(min(round(clip.start * rate), handle.frames))
            samples = handle.read(round((clip.end - clip.start) * rate),
                                  dtype="float32", always_2d=True).mean(axis=1)
            key = clip_key(samples, rate, bitrate)
            cached = cache / key[:2] / f"{key}.webm" if cache else None
            if cached is not None and cached.is_file():
                link_or_copy(cached, folder / clip.file)
            else:
                if joined is None:
                    joined = sf.SoundFile(str(stream), "w", rate, 1, "PCM_16")
                for piece in (silence, samples, silence):
                    joined.write(piece)
                length += 2 * len(silence) + len(samples)
                edges.append(length / rate)
                todo.append((clip, cached))
            full = length / rate >= BATCH_S  # bounds the temporary WAV for a film
            if joined is not None and (full or number == len(clips) - 1):
                joined.close()
                _encode(stream, edges, todo, folder, bitrate, audio, ffmpeg)
                encoded += len(todo)
                joined, todo, edges, length = None, [], [], 0
    missing = [clip.file for clip in clips if not (folder / clip.file).is_file()]
    if missing:
        raise InputError(f"ffmpeg cut {len(clips) - len(missing)} of {len(clips)} clips from "
                         f"{audio} (first missing: {missing[0]}); see the report_clips log")
    return encoded


def _encode(stream: Path, edges: list[float], todo: list[tuple[Clip, Path | None]],
            folder: Path, bitrate: str, audio: str | Path, ffmpeg: dict | None) -> None:
    """Encode the joined clips once, cut them apart at the silences, name them and keep a
    copy of each in the cache."""
    scratch = Path(tempfile.mkdtemp(dir=folder, prefix=".encode-"))
    # one clip: no cut at all (an empty segment_times is an error; the default cuts every 2 s)
    cuts = ({"segment_times": ",".join(f"{t:.4f}" for t in edges[:-1])} if len(edges) > 1
            else {"segment_time": f"{edges[-1] + 60:.0f}"})
    try:
        run_ffmpeg(["-i", file_arg(stream), *codec("libopus"), "-b:a", bitrate,
                    "-compression_level", str(COMPLEXITY),
                    *muxer("segment", segment_format="webm", reset_timestamps=1, **cuts),
                    file_arg(scratch).replace("%", "%%") + "/%05d.webm"],
                   stage=STAGE, path=audio, config=ffmpeg, media_duration_s=edges[-1])
        for number, (clip, cached) in enumerate(todo):
            piece = scratch / f"{number:05d}.webm"
            if not piece.is_file():
                continue  # reported by cut() as missing
            os.replace(piece, folder / clip.file)
            if cached is not None:  # whole or absent, even beside another job
                with atomic_path(cached) as tmp:
                    shutil.copyfile(folder / clip.file, tmp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        stream.unlink(missing_ok=True)


def write_clips(languages: list[Language], source_audio: str | Path, dubs: dict[str, Path],
                dest: str | Path, ffmpeg: dict | None = None,
                cache: str | Path | None = None) -> tuple[dict, int]:
    """Cut every clip into a hidden folder beside ``dest``, then rename it into place, so
    a killed run leaves no half-filled folder; returns the manifest (also in the folder)
    and how many clips were encoded (the others came from ``cache``)."""
    cuts, manifest = plan(languages)
    cache = Path(cache) if cache else None
    encoded = 0
    with atomic_dir(dest) as tmp:
        for key, clips in cuts.items():
            if key == "source":
                encoded += cut(source_audio, clips, tmp, BITRATE["source"], ffmpeg, cache)
            elif clips:
                encoded += cut(dubs[key], clips, tmp, BITRATE["dub"], ffmpeg, cache)
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1),
                                    encoding="utf-8")
    return manifest, encoded
