"""Real-time factor of the synthesize stage: Piper (English) and espeak-ng (Portuguese).

Runs ``synthesize.run`` on 20 lines per language with an empty cache (every line is
synthesized) and again with the cache filled (every line is linked), and prints the
real-time factor: seconds of work per second of speech produced (below 1 is faster than
real time). The Piper voice load is timed separately because a job pays it once.

    python bench/tts_speed.py               # 2 threads
    python bench/tts_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from conversation import LINES  # noqa: E402
from demo_media import DEMO_LINES  # noqa: E402

ENGLISH = [*LINES, *DEMO_LINES, "That is all for today, thank you for listening."]
PORTUGUESE = [
    "Bom dia a todos, e obrigado por terem vindo tão cedo hoje.",
    "Temos muito para fazer, por isso vamos começar pelo orçamento.",
    "Olhei para os números ontem à noite e eles não batem certo.",
    "Qual é a parte que mais te preocupa, as viagens ou o equipamento novo?",
    "Sobretudo o equipamento. Encomendámos o dobro das câmaras de que precisamos.",
    "A culpa foi minha. Vou ligar ao fornecedor esta tarde.",
    "Ótimo. Próximo ponto: o calendário das gravações de outono.",
    "O estúdio está livre em outubro, mas só nos dias úteis.",
    "Os dias úteis servem-me, desde que acabemos antes das seis.",
    "Então vamos reservar as duas primeiras semanas e ver até onde chegamos.",
    "Mais uma coisa. Os microfones novos chegaram ontem.",
    "Excelente notícia. Alguém os pode testar antes de sexta-feira?",
    "Posso fazê-lo amanhã de manhã, logo a seguir à reunião.",
    "Perfeito. Acho que é tudo por hoje.",
    "Obrigado a todos. Até para a semana.",
    "Antes de saírem, deixem as vossas notas na minha secretária.",
    "Bem-vindos à demonstração de dobragem feita por computador.",
    "Cada frase que ouvem é traduzida e falada noutra língua.",
    "O som original fica no ficheiro como segunda faixa de áudio.",
    "É tudo por hoje, obrigado por nos acompanharem.",
]
CASES = {"piper (en)": ("en", ENGLISH), "espeak (pt)": ("pt", PORTUGUESE)}


def translation(path: Path, language: str, texts: list[str]) -> Path:
    lines = [{"id": f"{i + 1:04d}", "speaker": "SPEAKER_00", "start": 3.0 * i,
              "end": 3.0 * i + 2.8, "source": text, "text": text, "edited": False}
             for i, text in enumerate(texts)]
    path.write_text(json.dumps({"source_language": "en", "target_language": language,
                                "backend": "bench", "model": "bench", "lines": lines}))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from dubflow.rule_runner import limit_threads

    limit_threads(args.threads)
    import synthesize
    from dubflow import tts_backends
    from dubflow import voices
    # Load the voice the way the stage does (cached per process), so "cold" below is
    # synthesis only; a job pays the load once.
    joe = voices.resolve("piper:joe", voices.settings({}), "en", "bench")
    started = time.perf_counter()
    tts_backends.load_piper(str(joe.model_path), str(joe.config_path), joe.identity)
    piper_load = time.perf_counter() - started
    print(f"threads={args.threads}; Piper voice load {piper_load:.2f} s (once per job, "
          f"not in the figures below)")
    print(f"{'backend':14s} {'lines':>5s} {'audio s':>8s} {'cold s':>7s} {'RTF cold':>9s} "
          f"{'cached s':>9s} {'RTF cached':>10s}")
    for label, (language, texts) in CASES.items():
        with tempfile.TemporaryDirectory(prefix="tts-bench-") as tmp:
            tmp = Path(tmp)
            source = translation(tmp / "translation.json", language, texts)
            tts = {"backend": "auto", "cache_dir": str(tmp / "cache")}
            started = time.perf_counter()
            entries = synthesize.run(source, tmp / "tts", language, tts, threads=args.threads)
            cold = time.perf_counter() - started
            started = time.perf_counter()
            again = synthesize.run(source, tmp / "tts", language, tts, threads=args.threads)
            warm = time.perf_counter() - started
            assert all(e["cached"] for e in again)
            audio = sum(e["duration_s"] for e in entries)
            print(f"{label:14s} {len(entries):5d} {audio:8.1f} {cold:7.2f} {cold / audio:9.3f} "
                  f"{warm:9.2f} {warm / audio:10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
