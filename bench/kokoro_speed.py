"""Kokoro speed: CPU seconds per second of speech on 1 and 2 threads, load time, peak RSS.

Each thread count runs in its own process, so its load time and peak RSS (the kernel's
high-water mark) are its own. A process speaks Brazilian Portuguese sentences (the voice
catalogue's) with jf_gongitsune until it has about 60 s of speech, after one warm-up
sentence that is not counted (onnxruntime plans its kernels on the first run); the
warm-up sentence is spoken again at the end to check the samples repeat exactly.

    python bench/kokoro_speed.py                       # models/kokoro, installed if absent
    python bench/kokoro_speed.py --models-dir /tmp/models --seconds 30
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
sys.path.insert(0, str(ROOT / "tools"))


def worker(models_dir: Path, threads: int, seconds: float) -> dict:
    """Load Kokoro on ``threads`` threads and speak until ``seconds`` of audio exist."""
    started, cpu_started = time.perf_counter(), time.process_time()
    from build_voice_catalogue import SENTENCES

    from dubflow.kokoro_voice import KokoroBackend, install_model
    from dubflow.tts_backends import VoiceSpec

    backend = KokoroBackend(install_model(models_dir), threads=threads)
    load_s = time.perf_counter() - started
    spec = VoiceSpec("kokoro", "jf_gongitsune")
    first, _ = backend.synthesize("Olá a todos.", spec, language="pt")  # warm-up, not counted
    wall, cpu, speech, lines = time.perf_counter(), time.process_time(), 0.0, 0
    while speech < seconds:
        text = SENTENCES["pt"][lines % len(SENTENCES["pt"])]
        audio, rate = backend.synthesize(text, spec, language="pt")
        speech += len(audio) / rate
        lines += 1
    cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
    again, _ = backend.synthesize("Olá a todos.", spec, language="pt")
    return {"threads": threads, "load_s": round(load_s, 2),
            "load_cpu_s": round(time.process_time() - cpu_started - cpu_s, 2),
            "lines": lines, "speech_s": round(speech, 1),
            "rtf_cpu": round(cpu_s / speech, 3), "rtf_wall": round(wall_s / speech, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "same_samples": bool(len(first) == len(again) and (first == again).all())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--seconds", type=float, default=60.0, help="speech per thread count")
    parser.add_argument("--threads", default="1,2", help="thread counts, one process each")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.models_dir, args.worker, args.seconds)))
        return 0
    print(f"{'threads':>7} {'load s':>7} {'speech s':>8} {'CPU s/s':>8} {'wall s/s':>8} "
          f"{'peak RSS MB':>11} {'repeatable':>10}")
    for threads in (int(t) for t in args.threads.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", str(threads), "--models-dir",
             str(args.models_dir), "--seconds", str(args.seconds)],
            check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{row['threads']:>7} {row['load_s']:>7.2f} {row['speech_s']:>8.1f} "
              f"{row['rtf_cpu']:>8.3f} {row['rtf_wall']:>8.3f} {row['peak_rss_mb']:>11} "
              f"{str(row['same_samples']):>10}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
