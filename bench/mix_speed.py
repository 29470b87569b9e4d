"""Wall time and peak memory of the mix stage on long generated inputs.

Shows that memory does not grow with the film's length: the voice track is written in
blocks and ffmpeg streams, so a 60-minute mix should peak at about the RSS of a 10-minute
one. For each length it generates (into --workdir, /tmp by default; never the repo) a
stereo 48 kHz pcm_s24le bed of pink noise and a tts folder of short tone lines at
22.05 kHz, about one every 6 s, some too long for their slot (borrowed, sped up with
rubberband, a few trimmed). The mix runs in a child process, so its figures are its own:

    python bench/mix_speed.py                    # 10 and 60 minutes
    python bench/mix_speed.py --minutes 2        # quick look
    python bench/mix_speed.py --peaks            # lines with clicks: the limiter path

Prints one row per length: wall seconds, seconds per minute of audio, peak RSS of the
Python process and of its largest ffmpeg, and what the fit plan did. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import numpy as np
import soundfile as sf

from dubflow.ffmpeg_safe import file_arg, run_ffmpeg

LINE_EVERY_S = 6.0
VOICE_RATE = 22050


def make_inputs(folder: Path, minutes: float, peaks: bool, seed: int = 1) -> tuple[Path, Path]:
    """source.wav and tts/ for a film of ``minutes``; reused if already there."""
    folder.mkdir(parents=True, exist_ok=True)
    source, tts = folder / "source.wav", folder / "tts"
    seconds = minutes * 60
    if not source.exists():
        run_ffmpeg(["-f", "lavfi", "-i",
                    f"anoisesrc=color=pink:sample_rate=48000:amplitude=0.1:duration={seconds}:seed=1",
                    "-af", "aformat=channel_layouts=stereo", "-c:a", "pcm_s24le", "-rf64", "auto",
                    file_arg(source)], stage="bench", path=source, media_duration_s=seconds)
    if not (tts / "lines.json").exists():
        tts.mkdir(exist_ok=True)
        rng = np.random.default_rng(seed)
        rows, t, i = [], 1.0, 0
        while t + LINE_EVERY_S < seconds:
            slot = rng.uniform(1.5, 3.5)
            # most lines fit; about one in four needs to borrow, speed up or be trimmed
            natural = slot * (rng.uniform(0.5, 1.0) if rng.random() < 0.75 else rng.uniform(1.2, 2.6))
            i += 1
            name = f"{i:05d}.wav"
            sf.write(tts / name, tone(natural, 300 + 40 * (i % 10), peaks), VOICE_RATE,
                     subtype="PCM_16")
            rows.append({"id": f"{i:05d}", "speaker": "SPEAKER_00", "start": round(t, 3),
                         "end": round(t + slot, 3), "text": f"line {i}", "voice": "tone",
                         "backend": "bench", "wav": name, "duration_s": natural,
                         "sample_rate": VOICE_RATE, "cache_key": name, "cached": False})
            t += LINE_EVERY_S * rng.uniform(0.6, 1.4)
        (tts / "lines.json").write_text(json.dumps(rows))
    return source, tts


def tone(seconds: float, hz: float, peaks: bool) -> np.ndarray:
    """A voice-like test line: a tone with a syllable-rate amplitude wobble.

    With ``peaks``, a 5 ms click near full scale starts it, like a plosive: the mix then
    cannot reach the target with one constant gain and takes the limiter path.
    """
    t = np.arange(int(seconds * VOICE_RATE)) / VOICE_RATE
    audio = 0.3 * np.sin(2 * np.pi * hz * t) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    if peaks:
        click = int(0.005 * VOICE_RATE)
        audio[:click] += 0.6 * np.sign(np.sin(2 * np.pi * 800 * t[:click]))
    return audio.astype(np.float32)


def child(source: str, tts: str, out: str) -> None:
    """Run the stage here and print its figures as JSON (the parent reads them)."""
    import logging

    import mix

    logging.basicConfig(filename=Path(out) / "mix.log", level=logging.INFO, filemode="w",
                        format="%(asctime)s %(name)s: %(message)s")
    started = time.monotonic()
    report = mix.run(source, tts, Path(out) / "dub.wav", Path(out) / "fit.json", {}, threads=1)
    wall = time.monotonic() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ffmpeg = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "python_rss_mb": own, "ffmpeg_rss_mb": ffmpeg,
                      "summary": report["summary"], "loudness": report["loudness"]}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dubflow-mix-bench"))
    parser.add_argument("--peaks", action="store_true",
                        help="plosive-like clicks on every line, so the peak limiter runs")
    parser.add_argument("--child", nargs=3, metavar=("SOURCE", "TTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    print(f"{'minutes':>7} {'lines':>5} {'wall s':>7} {'s/min':>6} {'python MB':>9} "
          f"{'ffmpeg MB':>9}  fit / loudness")
    for minutes in args.minutes:
        folder = args.workdir / f"{minutes:g}min{'-peaks' if args.peaks else ''}"
        started = time.monotonic()
        source, tts = make_inputs(folder, minutes, args.peaks)
        generated = time.monotonic() - started
        out = folder / "out"
        out.mkdir(exist_ok=True)
        result = subprocess.run([sys.executable, __file__, "--child", str(source), str(tts), str(out)],
                                check=True, capture_output=True, text=True)
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        s = figures["summary"]
        loud = figures["loudness"]
        print(f"{minutes:7g} {s['lines']:5d} {figures['wall_s']:7.1f} "
              f"{figures['wall_s'] / minutes:6.2f} {figures['python_rss_mb']:9.0f} "
              f"{figures['ffmpeg_rss_mb']:9.0f}  borrowed {s['borrowed']}, sped up {s['sped_up']}, "
              f"trimmed {s['trimmed']}; {loud['output_i']} LUFS, {loud['output_tp']} dBTP, "
              f"{loud['normalization']}  (inputs generated in {generated:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
