"""Kokoro speed: CPU seconds per second of speech per graph and threading, load time, peak RSS.

Each case (graph x threading) runs in its own process, so its load time and peak RSS (the
kernel's high-water mark) are its own; with ``--rounds 2`` or more the cases alternate,
so a neighbour's load on a shared machine falls on all of them alike. Graphs: ``served``
(the float-convolution graph synthesize uses) and ``int8`` (upstream's, joined from the
wheels). Threading: ``1`` and ``2`` intra-op threads on one line at a time, or ``lines2``:
one single-threaded session speaking two lines at once on two Python threads, as the
synthesize stage does. A process speaks Brazilian Portuguese sentences (the voice
catalogue's) with jf_gongitsune until it has about 60 s of speech, after one warm-up
sentence that is not counted (onnxruntime plans its kernels on the first run); the
warm-up sentence is spoken again at the end to check the samples repeat exactly.

    python bench/kokoro_speed.py                       # models/kokoro, installed if absent
    python bench/kokoro_speed.py --graphs served,int8 --threads 1,lines2 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(ROOT / "tools"))


def worker(models_dir: Path, graph: str, threads: str, seconds: float) -> dict:
    """Load one graph with one threading and speak until ``seconds`` of audio exist."""
    started, cpu_started = time.perf_counter(), time.process_time()
    from build_voice_catalogue import SENTENCES

    from dubflow.kokoro_voice import JOINED_FILE, MODEL_FILE, KokoroBackend, install_model
    from dubflow.tts_backends import VoiceSpec

    graph_file = {"served": MODEL_FILE, "int8": JOINED_FILE}[graph]
    side_by_side = threads == "lines2"
    backend = KokoroBackend(install_model(models_dir), threads=1 if side_by_side else int(threads),
                            graph=graph_file)
    load_s = time.perf_counter() - started
    spec = VoiceSpec("kokoro", "jf_gongitsune")
    first, _ = backend.synthesize("Olá a todos.", spec, language="pt")  # warm-up, not counted
    texts = SENTENCES["pt"]

    def speak(text: str) -> float:
        audio, rate = backend.synthesize(text, spec, language="pt")
        return len(audio) / rate

    wall, cpu, speech, lines = time.perf_counter(), time.process_time(), 0.0, 0
    with ThreadPoolExecutor(max_workers=2 if side_by_side else 1) as pool:
        while speech < seconds:
            speech += sum(pool.map(speak, texts))
            lines += len(texts)
    cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
    again, _ = backend.synthesize("Olá a todos.", spec, language="pt")
    return {"graph": graph, "threads": threads, "load_s": round(load_s, 2),
            "load_cpu_s": round(time.process_time() - cpu_started - cpu_s, 2),
            "lines": lines, "speech_s": round(speech, 1),
            "rtf_cpu": round(cpu_s / speech, 3), "rtf_wall": round(wall_s / speech, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "same_samples": bool(len(first) == len(again) and (first == again).all())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--seconds", type=float, default=60.0, help="speech per thread count")
    parser.add_argument("--graphs", default="served,int8", help="served and/or int8")
    parser.add_argument("--threads", default="1,lines2",
                        help="intra-op thread counts and/or lines2, one process each")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the cases this often")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        graph, threads = args.worker.split(":")
        print(json.dumps(worker(args.models_dir, graph, threads, args.seconds)))
        return 0
    print(f"{'graph':>7} {'threads':>7} {'load s':>7} {'speech s':>8} {'CPU s/s':>8} "
          f"{'wall s/s':>8} {'peak RSS MB':>11} {'repeatable':>10}")
    cases = [(g, t) for g in args.graphs.split(",") for t in args.threads.split(",")]
    for _, (graph, threads) in ((r, c) for r in range(args.rounds) for c in cases):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", f"{graph}:{threads}", "--models-dir",
             str(args.models_dir), "--seconds", str(args.seconds)],
            check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{row['graph']:>7} {row['threads']:>7} {row['load_s']:>7.2f} {row['speech_s']:>8.1f} "
              f"{row['rtf_cpu']:>8.3f} {row['rtf_wall']:>8.3f} {row['peak_rss_mb']:>11} "
              f"{str(row['same_samples']):>10}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
