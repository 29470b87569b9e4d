"""Audio clips and the browser-playable proxy of a reviewed video.

Clips are cut in Python from the WAVs the workflow wrote (no ffmpeg, a few milliseconds
each). The proxy is what a browser can play: the mkv holds the video copied bit for bit
(any codec) and AAC dubs in Matroska. It is made in two steps, both cached under
``cache/review/<name>/`` (outside ``work/`` and ``out/``): the picture once per input
video (VP8, small), and per language the dub track muxed onto it (Opus), again after each
rebuild changes the dub; the second step copies the picture, so it takes seconds.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from dubflow.atomic import atomic_path
from dubflow.ffmpeg_needs import codec, filter_, muxer
from dubflow.ffmpeg_safe import file_arg, probe, run_ffmpeg

STAGE = "review"
log = logging.getLogger(__name__)
#: Seconds of sound before and after a line in its clips.
CLIP_PAD_S = 0.25
#: The proxy's picture height: enough to see who speaks, cheap to encode.
PROXY_HEIGHT = 360
_proxy_lock = threading.Lock()


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """16-bit WAV in memory, what every browser's <audio> plays."""
    out = io.BytesIO()
    sf.write(out, np.clip(audio, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def read_span(path: Path, start_s: float, end_s: float) -> tuple[np.ndarray, int]:
    """Frames of ``path`` from ``start_s`` to ``end_s`` (clamped to the file), mono."""
    info = sf.info(str(path))
    first = max(0, int(start_s * info.samplerate))
    last = min(info.frames, max(first, int(end_s * info.samplerate)))
    audio, rate = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def clip(path: Path, start_s: float, end_s: float) -> bytes:
    """A line's clip: its span of ``path`` with a little of what is around it."""
    audio, rate = read_span(path, start_s - CLIP_PAD_S, end_s + CLIP_PAD_S)
    return wav_bytes(audio, rate)


def _identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def picture(video: Path, folder: Path, ffmpeg: dict | None) -> Path | None:
    """The input video's picture as small VP8 WebM, made once per input file; None for
    an input without a picture (audio only)."""
    info = probe(video, stage=STAGE, config=ffmpeg)
    streams = [s for s in info.video_streams if not s.is_attached_pic]
    if not streams:
        return None
    dest = folder / f"picture-{_key(_identity(video))}.webm"
    if dest.is_file():
        return dest
    args = ["-i", file_arg(video), "-map", "0:v:0", "-an", "-sn", "-dn"]
    height = streams[0].height or PROXY_HEIGHT
    if height > PROXY_HEIGHT:
        args += ["-vf", filter_("scale", w=-2, h=PROXY_HEIGHT)]
    args += [*codec("libvpx", stream="v", deadline="realtime", speed=8), "-b:v", "800k",
             "-g", "50", *muxer("webm")]
    for stale in folder.glob("picture-*.webm"):
        stale.unlink(missing_ok=True)
    with atomic_path(dest) as tmp:
        log.info("making the browser proxy of %s", video)
        run_ffmpeg([*args, file_arg(tmp)], stage=STAGE, path=video, config=ffmpeg,
                   media_duration_s=info.duration_s)
    return dest


def proxy(video: Path, dub_wav: Path, lang: str, folder: Path, ffmpeg: dict | None) -> Path:
    """The picture with the ``lang`` dub as its sound, for the page's <video>."""
    with _proxy_lock:  # the page asks for it while it may still be in the making
        pic = picture(video, folder, ffmpeg)
        dest = folder / f"{lang}-{_key(_identity(dub_wav), str(pic))}.webm"
        if dest.is_file():
            return dest
        for stale in folder.glob(f"{lang}-*.webm"):
            stale.unlink(missing_ok=True)
        if pic is None:  # audio only
            args = ["-i", file_arg(dub_wav), "-map", "0:a:0"]
        else:
            args = ["-i", file_arg(pic), "-i", file_arg(dub_wav),
                    "-map", "0:v:0", "-c:v", "copy", "-map", "1:a:0"]
        args += [*codec("libopus"), "-b:a", "96k", "-vn" if pic is None else "-shortest",
                 *muxer("webm")]
        with atomic_path(dest) as tmp:
            run_ffmpeg([*args, file_arg(tmp)], stage=STAGE, path=dub_wav, config=ffmpeg,
                       media_duration_s=sf.info(str(dub_wav)).duration)
        return dest
