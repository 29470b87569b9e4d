"""Is this machine ready to dub? Versions, and every configured model run on real audio.

`make verify` (or `python tools/verify.py [--configfile my.yaml]`) prints the
versions of ffmpeg, ffprobe, the pinned Python packages and the models, then loads each
configured model and runs it on about a second of generated speech: Whisper, the
diarization pipeline, the translation backend and a voice per target language. It exits
non-zero with the list of what is wrong, so a cluster node or a fresh laptop can be
checked before a season is queued on it.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import sys
import tempfile
import time
import tomllib
import traceback
from pathlib import Path
from collections.abc import Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

from dubflow.errors import DubflowError  # noqa: E402
from dubflow.redaction import redact  # noqa: E402

SAMPLE_TEXT = "Hello, this is a short test."


def load_config(configfiles: list[str]) -> dict:
    from dubflow import settings
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for extra in configfiles:
        _merge(config, yaml.safe_load(Path(extra).read_text()) or {})
    settings.validate_config(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    settings.resolve_model_paths(config, ROOT)
    return config


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def pinned_packages() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition("==")
        pins[name.strip()] = version.strip()
    return pins


def check_packages() -> str:
    wrong = []
    for name, pinned in pinned_packages().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} is not installed")
            continue
        if pinned and installed.split("+")[0] != pinned:
            wrong.append(f"{name} {installed} (pinned {pinned})")
    if wrong:
        raise RuntimeError("; ".join(wrong) + " - run `make setup`")
    return f"{len(pinned_packages())} pinned packages at their pinned versions"


def check_ffmpeg(config: dict) -> str:
    """Which binaries, why those, their versions, and that they have every filter, option,
    encoder and muxer the stages use (the same check as preflight)."""
    from dubflow import ffmpeg_safe
    ffmpeg_safe.check_capabilities(config["ffmpeg"])
    chosen = []
    for tool in ("ffmpeg", "ffprobe"):
        binary = ffmpeg_safe.locate_binary(tool, config["ffmpeg"][tool])
        version, _ = ffmpeg_safe.binary_version(binary.path)
        chosen.append(f"{tool} {version} ({binary.path}; {binary.why})")
    return "; ".join(chosen) + "; every filter, option, encoder and muxer the stages use"


def check_ffmpeg_graphs(config: dict, folder: Path) -> str:
    """Every kind of ffmpeg call the stages make, run on a second of audio with the chosen
    binary: extract's decode, each mix pass (measure, gain, limiter, tempo, AAC track)."""
    import extract
    from dubflow import mix_render

    work = folder / "graphs"
    work.mkdir()
    ran = mix_render.run_every_graph(work, config["mix"], config["ffmpeg"])
    extract.extract(work / "dub.mka", work / "audio.wav", work / "source.wav", config["ffmpeg"])
    return f"ran extract and mix ({', '.join(ran)}) on 1 s of audio"


def speech_wav(folder: Path) -> Path:
    """About two seconds of real Piper speech at 16 kHz, the analysis format."""
    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly

    from demo_media import speak

    audio, rate = speak(SAMPLE_TEXT)
    audio = resample_poly(audio, 16000, rate).astype(np.float32)
    padded = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(8000, np.float32)])
    path = folder / "audio.wav"
    sf.write(path, padded, 16000, subtype="PCM_16")
    return path


def check_whisper(config: dict, wav: Path) -> str:
    import transcribe

    result = transcribe.transcribe(wav, config["asr"], language="en", threads=2)
    text = " ".join(s.text for s in result.segments).strip()
    if "test" not in text.lower():
        raise RuntimeError(f"Whisper heard {text!r} instead of {SAMPLE_TEXT!r}")
    return f"{config['asr']['model']}: heard {text!r}"


def check_diarization(config: dict, wav: Path) -> str:
    import diarize

    settings = diarize.resolve_settings(config["diarization"])
    result = diarize.analyze(wav, settings, threads=2)
    return f"{settings['backend']}: {len(result.turns)} turn(s) on the test speech"


def check_separation(config: dict, wav: Path, folder: Path) -> str:
    method = config["mix"]["separation"]
    if method == "none":
        return "off (mix.separation: none)"
    import separate

    stats = separate.run(wav, folder / "bed.wav", folder / "separation.json", method, threads=2,
                         dtln_model=config["mix"]["dtln_model"])
    if stats["bleed_db"] is not None and stats["bleed_db"] > -10:
        raise RuntimeError(f"the bed still holds the speech ({stats['bleed_db']} dB)")
    return f"{method}: speech left in the bed {stats['bleed_db']} dB, RTF {stats['rtf']}"


def check_translation(config: dict, folder: Path, target: str) -> str:
    import translate

    transcript = folder / "transcript.json"
    transcript.write_text(json.dumps({"language": "en", "segments": [
        {"start": 0.5, "end": 2.5, "speaker": "SPEAKER_00", "text": SAMPLE_TEXT, "words": []}]}))
    settings = dict(config["translation"], cache_dir=str(folder / "cache"))
    document = translate.run(transcript, folder / f"{target}.json", target, settings,
                             asr=config["asr"], audio_path=folder / "audio.wav", threads=2)
    text = document["lines"][0]["text"]
    if not text.strip():
        raise RuntimeError("the translation came back empty")
    return f"{document['backend']} en→{target}: {text!r}"


def check_voice(config: dict, folder: Path, target: str) -> str:
    import synthesize

    translation = folder / f"{target}.json"
    if not translation.exists():
        translation.write_text(json.dumps({"lines": [{"id": "0001", "speaker": "SPEAKER_00",
                                                      "start": 0.5, "end": 2.5,
                                                      "source": SAMPLE_TEXT,
                                                      "text": SAMPLE_TEXT, "edited": False}]}))
    settings = dict(config["tts"], cache_dir=str(folder / "tts-cache"))
    lines = synthesize.run(translation, folder / f"tts-{target}", target, settings, threads=2)
    spoken = [line for line in lines if line.get("wav")]
    if not spoken or spoken[0]["duration_s"] <= 0.2:
        raise RuntimeError("the voice produced no audio")
    return f"{target}: {spoken[0]['voice']} spoke {spoken[0]['duration_s']:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", action="append", default=[],
                        help="extra config file(s), as given to snakemake")
    args = parser.parse_args(argv)
    problems: list[str] = []

    def check(name: str, function: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            detail = function()
            print(f"  ok    {name:<22} {redact(detail)} [{time.perf_counter() - started:.1f} s]")
        except (DubflowError, RuntimeError, OSError, ImportError, ValueError, KeyError) as error:
            sentence = redact(str(error).splitlines()[0] if str(error) else type(error).__name__)
            print(f"  FAIL  {name:<22} {sentence}")
            if not isinstance(error, DubflowError):
                print("\n".join("        " + line for line in
                                redact(traceback.format_exc()).splitlines()[-6:]))
            problems.append(f"{name}: {sentence}")

    print(f"dubflow runtime check (Python {sys.version.split()[0]})")
    try:
        config = load_config(args.configfile)
    except DubflowError as error:
        print(f"  FAIL  config                 {error}")
        return 2
    check("python packages", check_packages)
    check("ffmpeg", lambda: check_ffmpeg(config))
    with tempfile.TemporaryDirectory(prefix="dubflow-verify-") as tmp:
        folder = Path(tmp)
        check("ffmpeg graphs", lambda: check_ffmpeg_graphs(config, folder))
        wav = speech_wav(folder)
        check("asr", lambda: check_whisper(config, wav))
        check("diarization", lambda: check_diarization(config, wav))
        check("separation", lambda: check_separation(config, wav, folder))
        for target in config["target_languages"]:
            check(f"translation ({target})",
                  lambda lang=target: check_translation(config, folder, lang))
            check(f"voice ({target})", lambda lang=target: check_voice(config, folder, lang))
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
