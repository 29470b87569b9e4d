"""The mkv's dub track encoded in kept pieces (dubflow.mix_track): the pieces join like one
encode, and after an edit only the piece around it is encoded again."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from dubflow import mix_track
from dubflow.ffmpeg_safe import file_arg, resolve_binary, run_ffmpeg
from dubflow.mix_settings import settings

RATE = 48000
PIECE = 96  # frames: 2 s pieces, so 12 s of audio has five joins


@pytest.fixture(scope="module")
def dub(tmp_path_factory):
    """12 s of a dub-like mix: Piper speech over chords, with clicks on the joins (where
    the encoder switches to short blocks)."""
    from demo_media import speak

    tmp = tmp_path_factory.mktemp("track")
    t = np.arange(12 * RATE) / RATE
    bed = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (110, 165, 220, 330, 440))
    voice = np.zeros_like(t)
    at = int(0.5 * RATE)
    for text in ("The storm moved north during the night.", "The roads are open again.",
                 "Please keep your tickets ready."):
        audio, rate = speak(text)
        audio = np.interp(np.arange(0, len(audio), rate / RATE), np.arange(len(audio)), audio)
        voice[at:at + len(audio)] = 0.5 * audio[:len(voice) - at]
        at += len(audio) + RATE // 2
    for join in range(1, 6):
        click = join * PIECE * mix_track.FRAME - mix_track.FRAME // 2
        voice[click:click + 48] += 0.6
    audio = np.stack([bed + voice, bed + 0.8 * voice], axis=1)
    path = tmp / "dub.wav"
    sf.write(path, audio, RATE, subtype="PCM_24")
    return path, sf.read(path, dtype="float64")[0]


def decode(path):
    wav = path.with_suffix(".decoded.wav")
    run_ffmpeg(["-i", file_arg(path), "-c:a", "pcm_f32le", file_arg(wav)], stage="test", path=path)
    return sf.read(wav, dtype="float64", always_2d=True)[0]


def packets(path) -> list[tuple[str, str]]:
    """(pts, sha256 of the data) of every packet, as ffprobe reads them."""
    out = subprocess.run([resolve_binary("ffprobe"), "-v", "error", "-show_data_hash", "sha256",
                          "-show_entries", "packet=pts_time,data_hash", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split(",")) for line in out.split()]


def same_times(packets_a, packets_b) -> bool:
    """The same packet times, to Matroska's millisecond (each part's are rounded on their
    own), from minus the priming on (-1024/48000 s)."""
    a, b = (np.array([float(pts) for pts, _ in p]) for p in (packets_a, packets_b))
    return len(a) == len(b) and a[0] == b[0] < 0 and np.abs(a - b).max() <= 0.0011


def snr_db(reference, decoded) -> float:
    error = decoded[:len(reference)] - reference
    return 10 * np.log10((reference ** 2).sum() / (error ** 2).sum())


def test_pieces_join_like_one_encode(dub, tmp_path):
    path, audio = dub
    cfg = settings({}, 2)
    whole = tmp_path / "whole.mka"
    run_ffmpeg(["-i", file_arg(path), *mix_track.dub_codec(cfg), "-f", "matroska",
                file_arg(whole)], stage="test", path=path)
    pieced = tmp_path / "pieced.mka"
    assert mix_track.encode_track(path, pieced, cfg, None, None, piece_frames=PIECE) == (6, 0)

    one, joined = packets(whole), packets(pieced)
    assert len(joined) == len(one)  # the same frames: priming included, none doubled
    assert same_times(joined, one)
    a, b = decode(whole), decode(pieced)
    assert len(a) == len(b)
    assert snr_db(audio, b) > snr_db(audio, a) - 1.0
    # the 20 ms around each join: as clean as a whole encode's worst there, give or take
    around = [slice(j * PIECE * 1024 - 1024 - 480, j * PIECE * 1024 - 1024 + 480)
              for j in range(1, 6)]
    worst_joined = min(snr_db(audio[s], b[s]) for s in around)
    worst_whole = min(snr_db(audio[s], a[s]) for s in around)
    assert worst_joined > min(30.0, worst_whole - 3.0), (worst_joined, worst_whole)


def test_an_edit_encodes_only_its_piece_again(dub, tmp_path):
    path, audio = dub
    cfg, cache = settings({}, 2), tmp_path / "cache"
    first = tmp_path / "first.mka"
    assert mix_track.encode_track(path, first, cfg, cache, None, piece_frames=PIECE) == (6, 0)
    assert mix_track.encode_track(path, tmp_path / "again.mka", cfg, cache, None,
                                  piece_frames=PIECE) == (0, 6)
    assert packets(tmp_path / "again.mka") == packets(first)

    edited = audio.copy()
    middle = int(5.0 * RATE)  # inside the third piece (4.1-6.1 s), far from its joins
    edited[middle:middle + RATE // 2] *= 0.5
    edited_wav = tmp_path / "edited.wav"
    sf.write(edited_wav, edited, RATE, subtype="PCM_24")
    second = tmp_path / "second.mka"
    assert mix_track.encode_track(edited_wav, second, cfg, cache, None,
                                  piece_frames=PIECE) == (1, 5)
    before, after = packets(first), packets(second)
    changed = [i for i, (old, new) in enumerate(zip(before, after)) if old != new]
    assert changed and 2 * PIECE <= changed[0] and changed[-1] < 3 * PIECE

    # and the bytes depend neither on what was in the cache nor on how many processes
    # shared the encoding
    cold = tmp_path / "cold.mka"
    mix_track.encode_track(edited_wav, cold, cfg, None, None, piece_frames=PIECE, threads=2)
    assert packets(cold) == after


@pytest.mark.parametrize(("channels", "rate"), [(1, 44100), (6, 48000)])
def test_other_layouts_and_rates_join_too(dub, tmp_path, channels, rate):
    path, audio = dub
    mono = audio[:, 0]
    layout = mono[:, None] if channels == 1 else np.stack([0.3 * mono] * 6, axis=1)
    source = tmp_path / "dub.wav"
    sf.write(source, layout, rate, subtype="PCM_24")
    cfg = settings({"sample_rate": rate}, channels)
    whole, track = tmp_path / "whole.mka", tmp_path / "dub.mka"
    run_ffmpeg(["-i", file_arg(source), *mix_track.dub_codec(cfg), "-f", "matroska",
                file_arg(whole)], stage="test", path=source)
    mix_track.encode_track(source, track, cfg, None, None, piece_frames=PIECE)
    assert same_times(packets(track), packets(whole))
    decoded = decode(track)
    assert decoded.shape[1] == channels
    # against one whole encode (5.1's LFE channel keeps only the bass of this signal)
    assert snr_db(layout, decoded) > snr_db(layout, decode(whole)) - 1.0
