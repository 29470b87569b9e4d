"""The mkv's dub track: dub.wav in AAC, encoded in pieces that are kept, so that after a
one-line edit only the piece around that line is encoded again.

ffmpeg's AAC encoder was most of the mix stage (9 s of 14 s for 10 minutes of stereo),
while an edit changes a few seconds of dub.wav: the gain memo keeps the rest of the mix
sample for sample (a one-line edit on the bench changed 3.3 s of the 10 minutes, the
limiter's release included).

The track is cut on AAC's own grid (frames of 1024 samples) into pieces of PIECE_FRAMES
frames. Each piece is encoded from PREROLL frames before it (so the encoder's choices
have settled) to POSTROLL frames after it (its last transforms reach into the next
piece), and only its own frames are kept. AAC frames carry no references to other frames,
and frame n of a piece's encode lies on the same grid as frame n of a whole-file encode,
so the decoder joins the pieces like one encode. Measured on the bench's dub: decoded
SNR 52.9 dB against 53.2 dB for one whole encode; in the 0.3 s around the joins 52.8 dB
against 53.5 dB (medians).

A piece is cached under the hash of the samples it was encoded from, the encoder's
settings and the ffmpeg build. The first piece is written as Matroska by the encoder
itself, so the track keeps the codec delay (the 1024 samples of encoder priming the
player skips, which an ADTS stream cannot carry); the others as ADTS frames. ffmpeg's
concat demuxer joins the two without encoding, from a list of fixed names in a scratch
folder.
"""

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from dubflow.atomic import atomic_path, scratch_dir
from dubflow.ffmpeg_needs import codec, demuxer, filter_, muxer
from dubflow.ffmpeg_safe import binary_version, file_arg, resolve_binary, run_ffmpeg
from dubflow.ffmpeg_safe import settings as ffmpeg_settings
from dubflow.mix_settings import STAGE, MixSettings

log = logging.getLogger(__name__)

#: AAC's frame and ffmpeg's encoder priming, in samples.
FRAME = 1024
#: 30 s at 48 kHz: a one-line edit re-encodes about this much (0.5 s of encoding).
PIECE_FRAMES = 1408
#: Frames encoded before and after a piece and dropped: the bench's joins measured as
#: clean as the rest from 16 frames on (0.34 s); 8 after covers the encoder's look-ahead.
PREROLL = 16
POSTROLL = 8
#: AAC bit rate of the mkv's dub track by channel count.
DUB_BITRATE = {1: "96k", 2: "192k", 6: "384k", 8: "512k"}


def dub_codec(cfg: MixSettings) -> list[str]:
    """AAC with ffmpeg's fast coder, 2.5 times faster than its default two-loop search
    (6.3 s against 16.1 s for 10 minutes of stereo, measured); at 96 kb/s a channel the
    two are not told apart on speech over a ducked bed.

    Intensity stereo is off: it is a low-bit-rate tool that codes the high bands of both
    channels as one, and at these rates it only costs fidelity. On the 10-minute bench dub
    the decoded track's SNR went from 44.8 to 53.1 dB (the worst 5 % of seconds from 36.1
    to 47.6 dB) at the same bit rate and speed. M/S stereo stays: it is what codes the
    centred voice well (without it: 36.4 dB)."""
    return [*codec("aac", aac_coder="fast", aac_is=0), "-b:a", DUB_BITRATE[cfg.channels]]


def adts_frames(data: bytes) -> list[bytes]:
    """The frames of an ADTS stream (each starts with a 7-byte header holding its length)."""
    frames, at = [], 0
    while at + 7 <= len(data):
        if data[at] != 0xFF or data[at + 1] & 0xF0 != 0xF0:
            raise ValueError(f"not an ADTS frame at byte {at}")
        length = (data[at + 3] & 3) << 11 | data[at + 4] << 3 | data[at + 5] >> 5
        frames.append(data[at:at + length])
        at += length
    return frames


@dataclass(frozen=True)
class Piece:
    """Frames ``first`` to ``first + keep`` of the track (to its end when ``keep`` is None),
    encoded from samples ``begin`` to ``end``: they are frames ``skip`` on of that encode."""

    index: int
    first: int
    keep: int | None
    begin: int
    end: int
    key: str

    @property
    def skip(self) -> int:
        return self.first - self.begin // FRAME

    @property
    def kind(self) -> str:
        return "mka" if self.index == 0 else "aac"


def pieces(dub_wav: Path, frames: int, rate: int, cfg: MixSettings, build: str,
           piece_frames: int) -> list[Piece]:
    """The track's pieces, each keyed by what its frames depend on: its samples (pre- and
    post-roll included), where it sits in them, the encoder's settings and the build."""
    total = -(-frames // FRAME) + 1  # the encoder's packets, priming included
    found = []
    for index, first in enumerate(range(0, total, piece_frames)):
        keep = None if first + piece_frames >= total else piece_frames
        begin = max(0, first - PREROLL) * FRAME
        end = frames if keep is None else min(frames, (first + keep + POSTROLL) * FRAME)
        samples = sf.read(str(dub_wav), start=begin, stop=end, dtype="int32")[0]
        head = repr((build, dub_codec(cfg), rate, samples.shape, first - begin // FRAME,
                     keep, index == 0))
        found.append(Piece(index, first, keep, begin, end,
                           hashlib.sha256(head.encode() + samples.tobytes()).hexdigest()))
    return found


def encode_track(dub_wav: Path, track: Path, cfg: MixSettings, cache_dir: Path | None,
                 ffmpeg: dict | None, piece_frames: int = PIECE_FRAMES,
                 threads: int = 1) -> tuple[int, int]:
    """Write ``track`` (Matroska, AAC) from ``dub_wav``; return (pieces encoded, pieces
    from the cache). Without ``cache_dir`` every piece is encoded.

    The pieces to encode are shared among ``threads`` ffmpeg processes (the encoder is
    single-threaded): the bench's first mix of 10 minutes took 22.9 s with one and 17.0 s
    with two, as long as when the encoder ran inside the mixing pass (17.5 s)."""
    build = binary_version(resolve_binary("ffmpeg", ffmpeg_settings(ffmpeg).ffmpeg))[0]
    info = sf.info(str(dub_wav))
    found = pieces(dub_wav, info.frames, info.samplerate, cfg, build, piece_frames)
    cached = {piece.index: cache_dir / f"{piece.key}.{piece.kind}" if cache_dir else None
              for piece in found}
    with scratch_dir(track) as work:
        coded = {piece.index: work / f"{piece.index}.{piece.kind}" for piece in found}
        missing = [piece for piece in found
                   if not (cached[piece.index] and cached[piece.index].is_file())]
        groups = [missing[i::threads] for i in range(min(threads, len(missing)))]
        with ThreadPoolExecutor(max(1, len(groups))) as pool:
            list(pool.map(lambda group: _encode(dub_wav, info.duration, group, coded, cfg,
                                                ffmpeg), groups))
        parts = []
        for piece in found:
            keep = cached[piece.index]
            if piece in missing:
                data = _kept(piece, coded[piece.index], work, ffmpeg)
                if keep is not None:
                    with atomic_path(keep) as tmp:
                        tmp.write_bytes(data)
            else:
                data = keep.read_bytes()
            parts.append(data)
        with atomic_path(track) as tmp:
            if len(parts) > 1:
                _join(work, parts[0], piece_frames, b"".join(parts[1:]), tmp, info.samplerate,
                      ffmpeg)
            else:
                tmp.write_bytes(parts[0])
    log.info("dub track: %d piece(s) of %.0f s encoded, %d from the cache", len(missing),
             piece_frames * FRAME / info.samplerate, len(found) - len(missing))
    return len(missing), len(found) - len(missing)


def _encode(dub_wav: Path, duration_s: float, missing: list[Piece], coded: dict[int, Path],
            cfg: MixSettings, ffmpeg: dict | None) -> None:
    """Encode the pieces in one pass over dub.wav: each is cut out sample-exactly and has
    an encoder and an output file of its own (the first one Matroska, the others ADTS)."""
    graph = ["[0:a]" + filter_("asplit", len(missing))
             + "".join(f"[in{piece.index}]" for piece in missing)]
    outputs = []
    for piece in missing:
        graph.append(f"[in{piece.index}]"
                     + filter_("atrim", start_sample=piece.begin, end_sample=piece.end) + ","
                     + filter_("asetpts", "PTS-STARTPTS") + f"[out{piece.index}]")
        outputs += ["-map", f"[out{piece.index}]", *dub_codec(cfg),
                    *muxer("matroska" if piece.kind == "mka" else "adts"),
                    file_arg(coded[piece.index])]
    run_ffmpeg(["-i", file_arg(dub_wav), "-filter_complex", ";".join(graph), *outputs],
               stage=STAGE, path=dub_wav, config=ffmpeg,
               media_duration_s=duration_s)


def _kept(piece: Piece, coded: Path, work: Path, ffmpeg: dict | None) -> bytes:
    """A piece's own frames: ADTS frames cut from its encode or, for the first piece, its
    Matroska file cut by a copy (which counts packets; an encode's -frames counts the
    frames fed to the encoder, one fewer than it writes)."""
    if piece.kind == "aac":
        frames = adts_frames(coded.read_bytes())
        return b"".join(frames[piece.skip:piece.skip + piece.keep if piece.keep else None])
    if piece.keep is None:
        return coded.read_bytes()
    head = work / "head-cut.mka"
    run_ffmpeg(["-i", file_arg(coded), "-c", "copy", "-frames:a", str(piece.keep),
                *muxer("matroska"), file_arg(head)], stage=STAGE, path=coded, config=ffmpeg)
    return head.read_bytes()


def _join(work: Path, head: bytes, head_frames: int, rest: bytes, dest: Path, rate: int,
          ffmpeg: dict | None) -> None:
    """The first piece's Matroska file and the other pieces' frames as one track.

    The frames are put in Matroska first: the concat demuxer carries packet durations
    over without converting them between time bases (an ADTS part came out with blocks
    lasting ten minutes). The demuxer places the second part at the first one's length,
    given here in samples: its frames less the priming (read from the file, the length
    is rounded to milliseconds and counts the priming, and the second part came out a
    frame late). The output offset puts the first frame back at minus the priming, where
    the encoder wrote it. The test compares every packet's time with one whole encode."""
    (work / "head.mka").write_bytes(head)
    (work / "rest.aac").write_bytes(rest)
    run_ffmpeg([*demuxer("aac"), "-i", file_arg(work / "rest.aac"), "-c", "copy",
                *muxer("matroska"), file_arg(work / "rest.mka")],
               stage=STAGE, path=dest, config=ffmpeg)
    listing = work / "pieces.ffconcat"
    listing.write_text("ffconcat version 1.0\nfile head.mka\n"
                       f"duration {(head_frames - 1) * FRAME / rate!r}\nfile rest.mka\n",
                       encoding="utf-8")
    run_ffmpeg([*demuxer("concat"), "-i", file_arg(listing), "-c", "copy",
                "-output_ts_offset", repr(-FRAME / rate), *muxer("matroska"), file_arg(dest)],
               stage=STAGE, path=dest, config=ffmpeg)
