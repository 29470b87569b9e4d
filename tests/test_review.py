"""The review app's parts that need no build: voice choices, the edits file, the guard."""

from __future__ import annotations

import pytest

from dubflow.errors import InputError
from dubflow.review import choices
from dubflow.review.app import Guard, Refused
from dubflow.review.project import line_limit, read_edit_rows, write_edits
from translate import Line, read_edits

TOKEN = "t0ken-for-tests"


def test_voice_choices_lay_over_the_configured_voices(tmp_path):
    path = choices.voices_path(tmp_path, "ep 1")
    assert choices.read_choices(path) == {}
    choices.write_choices(path, {"pt": {"SPEAKER_01": "espeak:pt-br+m3"}})
    choices.write_choices(path, {"pt": {"SPEAKER_00": "espeak:pt-br+f2"}})
    read = choices.read_choices(path)
    assert read == {"pt": {"SPEAKER_00": "espeak:pt-br+f2", "SPEAKER_01": "espeak:pt-br+m3"}}
    settings = {"tts": {"voices": {"pt": {"SPEAKER_00": "espeak:pt-br"}, "en": {"default": "x"}}}}
    merged = choices.merge_voices(settings, read)
    assert merged["tts"]["voices"]["pt"] == read["pt"]
    assert merged["tts"]["voices"]["en"] == {"default": "x"}
    assert settings["tts"]["voices"]["pt"] == {"SPEAKER_00": "espeak:pt-br"}  # not changed


@pytest.mark.parametrize("text", ["[1, 2]", "pt: [a]", "PT: {S: x}", "pt: {SPEAKER_00: 3}",
                                  "pt: {SPEAKER_00: ''}", "pt: {SPEAKER_00: [x}"])
def test_a_bad_voice_choices_file_is_one_sentence(tmp_path, text):
    path = tmp_path / "ep.voices.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match="voice choices file .*ep.voices.yaml"):
        choices.read_choices(path)


def test_edits_written_by_the_app_are_read_by_the_translate_stage(tmp_path):
    lines = [Line(id=f"{i:04d}", speaker="S", start=i, end=i + 1, source=f"Line {i}, \"said\".")
             for i in range(1, 4)]
    path = tmp_path / "ep.pt.tsv"
    path.write_text("id\ttext\n2\tfeito à mão\n")  # a reviewer's own row, zeros lost
    write_edits(path, {"0003": ('Ele disse: "sim"\tjá', lines[2].source)})
    write_edits(path, {"0001": ("Olá a todos", lines[0].source)})
    assert read_edits(path, lines) == {"0001": "Olá a todos", "0002": "feito à mão",
                                       "0003": 'Ele disse: "sim"\tjá'}
    assert list(read_edit_rows(path)) == ["0001", "0002", "0003"]
    assert path.read_text().splitlines()[0] == "id\ttext\tsource"


def test_a_line_limit_is_what_its_room_can_hold_at_full_speed():
    assert line_limit(2.0, 11 * 1.3 * 1.25) == 39
    assert line_limit(0.2, 11) == 20  # a short interjection still takes a few words


def scope(path="/", query="", method="GET", headers=None, port=8000):
    base = {"host": f"127.0.0.1:{port}"}
    base.update(headers or {})
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(k.encode(), v.encode()) for k, v in base.items()]}


@pytest.mark.parametrize("request_scope, status", [
    (scope(query=f"token={TOKEN}"), None),
    (scope(query=f"token={TOKEN}", headers={"sec-fetch-site": "same-origin"}), None),
    (scope("/api/apply", method="POST", headers={"x-review-token": TOKEN,
                                                 "origin": "http://127.0.0.1:8000"}), None),
    (scope(), 403),  # no token
    (scope(query="token=wrong"), 403),
    (scope("/api/apply", query=f"token={TOKEN}", method="POST"), 403),  # POST: header only
    (scope(query=f"token={TOKEN}", headers={"host": "evil.example:8000"}), 403),  # rebinding
    (scope(query=f"token={TOKEN}", headers={"sec-fetch-site": "cross-site"}), 403),
    (scope("/api/apply", method="POST", headers={"x-review-token": TOKEN,
                                                 "origin": "http://evil.example"}), 403),
    (scope("/clip/pt/..%2F..%2Fetc%2Fpasswd/dub", query=f"token={TOKEN}"), 400),
    (scope("/clip/pt/0001/../../../etc/passwd", query=f"token={TOKEN}"), 400),
    (scope("/", query=f"token={TOKEN}&lang=%2Fetc"), 400),
])
def test_the_guard_refuses_foreign_tokenless_and_path_requests(request_scope, status):
    guard = Guard(None, TOKEN, {"port": 8000})
    if status is None:
        guard.check(request_scope)
    else:
        with pytest.raises(Refused) as refused:
            guard.check(request_scope)
        assert refused.value.status == status and refused.value.sentence.endswith(".")
