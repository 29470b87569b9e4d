"""Measure every Kokoro voice in every target language and write the voice catalogue.

The five Kokoro style vectors are Japanese speakers; how well each one speaks
Portuguese or French, how high it sounds and how fast it talks cannot be read from the
model, only measured. For each language x voice this speaks a set of everyday sentences
and records

- ``f0_hz``: median pitch of the voiced frames (a YIN tracker below); ``sex`` follows
  from it (female above 165 Hz), which is what voice assignment needs;
- ``wer``: word error rate of a round trip through Whisper base (the repo's model),
  after lowercasing and stripping punctuation: how intelligible the voice is;
- ``wpm``: speaking rate at speed 1.0 (words per minute of audio);
- ``speed``: the speed that brings the voice to the language's target rate, clamped
  to 0.9-1.3 (beyond that Kokoro slurs or drags).

espeak-ng, the fallback for every language, gets a WER too, as the baseline.

    python tools/build_voice_catalogue.py --models-dir models --languages pt,es,en
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

from dubflow.atomic import write_text
from dubflow.kokoro_voice import KokoroBackend, install_model, kokoro_language
from dubflow.pitch import median_f0
from dubflow.tts_backends import ESpeakBackend, VoiceSpec

VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo",
          "jm_kumo:0.5+jf_gongitsune:0.5", "jm_kumo:0.75+jf_nezumi:0.25")
TARGET_WPM = {"pt": 150, "es": 150, "fr": 150, "it": 150, "en": 160}
SPEED_RANGE = (0.9, 1.3)
PROBE_SPEED = 1.25  # a second speed, to learn how Kokoro's rate follows its speed input
FEMALE_ABOVE_HZ = 165.0
SENTENCES = {
    "pt": ["Bom dia, você sabe a que horas sai o próximo ônibus para o centro?",
           "Esqueci o guarda-chuva em casa e agora está chovendo muito.",
           "Minha irmã vai se casar no mês que vem, em uma pequena igreja.",
           "Pode me passar o sal, por favor? A comida está sem gosto.",
           "Eles compraram um apartamento novo perto da praia.",
           "O médico disse que eu preciso dormir mais e beber mais água.",
           "Vamos ao cinema hoje à noite ou você prefere ficar em casa?",
           "A reunião foi adiada porque o diretor ainda não chegou."],
    "es": ["Buenos días, ¿sabes a qué hora sale el próximo autobús al centro?",
           "Olvidé el paraguas en casa y ahora está lloviendo mucho.",
           "Mi hermana se casa el mes que viene en una pequeña iglesia.",
           "¿Me pasas la sal, por favor? La comida no tiene sabor.",
           "Ellos compraron un piso nuevo cerca de la playa.",
           "El médico dijo que tengo que dormir más y beber más agua.",
           "¿Vamos al cine esta noche o prefieres quedarte en casa?",
           "La reunión se aplazó porque el director todavía no ha llegado."],
    "fr": ["Bonjour, savez-vous à quelle heure part le prochain bus pour le centre?",
           "J'ai oublié mon parapluie à la maison et maintenant il pleut beaucoup.",
           "Ma sœur va se marier le mois prochain dans une petite église.",
           "Tu peux me passer le sel, s'il te plaît? Le plat n'a pas de goût.",
           "Ils ont acheté un nouvel appartement près de la plage.",
           "Le médecin a dit que je dois dormir plus et boire plus d'eau.",
           "On va au cinéma ce soir ou tu préfères rester à la maison?",
           "La réunion a été reportée parce que le directeur n'est pas encore arrivé."],
    "it": ["Buongiorno, sa a che ora parte il prossimo autobus per il centro?",
           "Ho dimenticato l'ombrello a casa e adesso piove molto.",
           "Mia sorella si sposa il mese prossimo in una piccola chiesa.",
           "Mi passi il sale, per favore? Il cibo non ha sapore.",
           "Hanno comprato un appartamento nuovo vicino al mare.",
           "Il medico ha detto che devo dormire di più e bere più acqua.",
           "Andiamo al cinema stasera o preferisci restare a casa?",
           "La riunione è stata rinviata perché il direttore non è ancora arrivato."],
    "en": ["Good morning, do you know when the next bus to the city centre leaves?",
           "I forgot my umbrella at home and now it is raining hard.",
           "My sister is getting married next month in a small church.",
           "Could you pass me the salt, please? The food has no taste.",
           "They bought a new flat close to the beach.",
           "The doctor said I need to sleep more and drink more water.",
           "Shall we go to the cinema tonight, or would you rather stay home?",
           "The meeting was put off because the director has not arrived yet."],
}


def normalise(text: str) -> str:
    """Lowercase, punctuation (any Unicode P* character) to spaces, single spaces."""
    text = unicodedata.normalize("NFC", text.lower())
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


def load_whisper(models_dir: Path):
    from faster_whisper import WhisperModel

    return WhisperModel(str(models_dir / "whisper-base"), device="cpu", compute_type="int8",
                        cpu_threads=1, num_workers=1, local_files_only=True)


def transcribe(whisper, audio: np.ndarray, rate: int, language: str) -> str:
    """Whisper base on one sentence, language forced, no context carried over."""
    from scipy.signal import resample_poly

    divisor = np.gcd(16000, rate)
    audio16 = resample_poly(audio, 16000 // divisor, rate // divisor).astype(np.float32)
    segments, _ = whisper.transcribe(audio16, language=language, beam_size=5,
                                     condition_on_previous_text=False, vad_filter=False)
    return " ".join(segment.text for segment in segments)


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    return float(jiwer.wer([normalise(r) for r in references],
                           [normalise(h) or "<empty>" for h in hypotheses]))


def measure(synthesize, whisper, language: str, sentences: list[str]) -> dict:
    """WER, words per minute and median F0 of one voice over the sentences."""
    heard, clips, rate = [], [], 24000
    for text in sentences:
        audio, rate = synthesize(text)
        clips.append(audio)
        heard.append(transcribe(whisper, audio, rate, language))
    words = sum(len(normalise(s).split()) for s in sentences)
    seconds = sum(len(c) for c in clips) / rate
    return {"f0_hz": round(median_f0(np.concatenate(clips), rate), 1),
            "wer": round(word_error_rate(sentences, heard), 3),
            "wpm": round(60 * words / seconds, 1),
            "_seconds": [len(c) / rate for c in clips]}


def speaking_rate(synthesize, sentences: list[str]) -> float:
    """Words per minute of audio (Kokoro trims the silence around each sentence)."""
    clips = [synthesize(text) for text in sentences]
    seconds = sum(len(audio) / rate for audio, rate in clips)
    return 60 * sum(len(normalise(s).split()) for s in sentences) / seconds


def calibrated_speed(wpm: float, probe_wpm: float, target: float) -> tuple[float, float]:
    """The speed that reaches ``target`` words/min, clamped, and the rate it gives.

    Kokoro's rate does not grow as fast as ``speed`` (durations are whole frames, so
    short phonemes barely shrink: speed 1.3 makes a sentence 0.84 as long, not 0.77).
    The rate is modelled as ``wpm * speed ** k`` with ``k`` measured at PROBE_SPEED.
    """
    k = max(np.log(probe_wpm / wpm) / np.log(PROBE_SPEED), 0.2)
    speed = float(np.clip((target / wpm) ** (1 / k), *SPEED_RANGE))
    return round(speed, 2), round(float(wpm * speed ** k), 1)


def catalogue_language(backend, espeak, whisper, language: str, log, count: int = 8) -> dict:
    sentences = SENTENCES[language][:count]
    target = TARGET_WPM.get(language, 150)
    entry = {"target_wpm": target, "voices": {}}
    espeak_voice = kokoro_language(language)
    if not espeak.library.has_voice(espeak_voice):
        espeak_voice = espeak.library.voice_for_language(language)
    baseline = measure(lambda t: espeak.synthesize(t, VoiceSpec("espeak", espeak_voice)),
                       whisper, language, sentences)
    entry["espeak"] = {"voice": espeak_voice, "wer": baseline["wer"], "wpm": baseline["wpm"],
                       "f0_hz": baseline["f0_hz"]}
    log(f"{language} espeak:{espeak_voice} {baseline}")
    for voice in VOICES:
        spec = VoiceSpec("kokoro", voice)
        found = measure(lambda t, s=spec: backend.synthesize(t, s, language=language),
                        whisper, language, sentences)
        probe = speaking_rate(lambda t, s=spec: backend.synthesize(
            t, s, PROBE_SPEED, language=language), sentences[:4])
        seconds = found.pop("_seconds")
        base = 60 * sum(len(normalise(t).split()) for t in sentences[:4]) / sum(seconds[:4])
        found["speed"], found["wpm_at_speed"] = calibrated_speed(
            found["wpm"], found["wpm"] * probe / base, target)
        found["sex"] = "female" if found["f0_hz"] > FEMALE_ABOVE_HZ else "male"
        entry["voices"][voice] = found
        log(f"{language} {voice} {found}")
    return entry


def to_markdown(catalogue: dict) -> str:
    lines = ["# Kokoro voice catalogue", "",
             "Generated by `tools/build_voice_catalogue.py`: 8 everyday sentences per language, "
             "WER by Whisper base (lowercase, no punctuation), words/min at speed 1.0, "
             "`speed` reaches the target rate (150 wpm, en 160) within 0.9-1.3, fitted from a "
             "second run at speed 1.25; `wpm at speed` is the rate it predicts.", "",
             "| lang | voice | F0 Hz | sex | WER | wpm | speed | wpm at speed |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for language, entry in catalogue["languages"].items():
        for voice, v in entry["voices"].items():
            lines.append(f"| {language} | {voice} | {v['f0_hz']:.0f} | {v['sex']} | "
                         f"{100 * v['wer']:.1f} % | {v['wpm']:.0f} | {v['speed']:.2f} | "
                         f"{v['wpm_at_speed']:.0f} |")
        base = entry["espeak"]
        lines.append(f"| {language} | espeak-ng {base['voice']} (baseline) | | | "
                     f"{100 * base['wer']:.1f} % | {base['wpm']:.0f} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--languages", default="pt,es,fr,it,en")
    parser.add_argument("--sentences", type=int, default=8, help="first N sentences (smoke runs)")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "workflow" / "resources" / "voice_catalogue.yaml")
    args = parser.parse_args(argv)
    import yaml

    languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    unknown = [code for code in languages if code not in SENTENCES]
    if unknown:
        parser.error(f"no test sentences for {', '.join(unknown)}; "
                     f"choose from {', '.join(SENTENCES)}")
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", flush=True)

    backend = KokoroBackend(install_model(args.models_dir), threads=1)
    espeak, whisper = ESpeakBackend(), load_whisper(args.models_dir)
    catalogue = {"generated_by": "tools/build_voice_catalogue.py", "asr": "whisper-base int8",
                 "female_above_hz": FEMALE_ABOVE_HZ, "speed_range": list(SPEED_RANGE),
                 "languages": {}}
    for language in languages:
        catalogue["languages"][language] = catalogue_language(
            backend, espeak, whisper, language, log, args.sentences)
        # written after every language, so an interrupted run keeps what it measured
        write_text(args.out, yaml.safe_dump(catalogue, sort_keys=False, allow_unicode=True))
        write_text(args.out.with_suffix(".md"), to_markdown(catalogue))
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
