"""Config validation, the samples sheet and preflight: every bad value is one sentence."""

from pathlib import Path

import pytest
import yaml

from conftest import default_config
from dubflow import settings
from dubflow.errors import ConfigError, InputError, ModelError
from dubflow.whisper_model import check_whisper_model

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SHEET_SCHEMA = ROOT / "workflow" / "schemas" / "samples.schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def validated():
    """The shipped config as the workflow sees it: every schema default filled in."""
    return default_config()


def test_shipped_config_is_valid(config):
    settings.validate_config(config, SCHEMA)


def test_shipped_sheet_lists_no_file_a_clean_clone_lacks():
    """A row for in/demo.mp4 made `snakemake --lint` (and every run) fail on a fresh clone
    before `make demo` had written that file: the shipped sheet holds only its header."""
    assert settings.read_sheet(ROOT / "config" / "samples.tsv", SHEET_SCHEMA) == {}


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"colour": "red"}, "unknown key(s) 'colour'"),
        ({"asr": {"beamsize": 5}}, "unknown key(s) 'beamsize' under 'asr'"),
        ({"asr": {"compute_type": "int3"}}, "key 'asr.compute_type' is invalid"),
        ({"asr": {"beam_size": 0}}, "key 'asr.beam_size' is invalid"),
        ({"source_language": "English"}, "key 'source_language' is invalid"),
        ({"target_languages": ["pt", "PT"]}, "key 'target_languages.1' is invalid"),
        ({"ffmpeg": {"timeout_s": -1}}, "key 'ffmpeg.timeout_s' is invalid"),
    ],
)
def test_bad_config_names_the_key(config, change, expected):
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    with pytest.raises(ConfigError) as caught:
        settings.validate_config(config, SCHEMA)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_inputs_are_discovered_by_stem(tmp_path):
    (tmp_path / "ep01.mkv").write_bytes(b"x")
    (tmp_path / "it's a show; ep 2.mp4").write_bytes(b"x")
    (tmp_path / ".hidden.mp4").write_bytes(b"x")
    found = settings.discover_inputs(tmp_path)
    assert sorted(found) == ["ep01", "it's a show; ep 2"]


def test_two_inputs_with_one_name_are_refused(tmp_path):
    (tmp_path / "ep01.mkv").write_bytes(b"x")
    (tmp_path / "ep01.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="would both be dubbed as 'ep01'"):
        settings.discover_inputs(tmp_path)


def write_sheet(path, text):
    path.write_text(text.replace("|", "\t"))
    return path


def test_sheet_rows_override_config(tmp_path, validated):
    sheet = write_sheet(
        tmp_path / "s.tsv",
        "name|path|source_language|target_languages\n"
        "a|in/a.mp4|en|pt, es\n"
        "b|in/b.mp4||\n",
    )
    samples = settings.read_sheet(sheet, SHEET_SCHEMA)
    assert settings.settings_for(validated, samples["a"])["target_languages"] == ["pt", "es"]
    assert settings.settings_for(validated, samples["a"])["source_language"] == "en"
    b = settings.settings_for(validated, samples["b"])
    assert b["source_language"] == validated["source_language"]
    assert b["target_languages"] == validated["target_languages"]


def test_sheet_without_path_column(tmp_path):
    sheet = write_sheet(tmp_path / "s.tsv", "name|file\na|x.mp4\n")
    with pytest.raises(InputError, match="has no 'path' column"):
        settings.read_sheet(sheet, SHEET_SCHEMA)


def test_sheet_bad_language_names_the_row(tmp_path):
    sheet = write_sheet(
        tmp_path / "s.tsv", "name|path|target_languages\na|a.mp4|pt\nb|b.mp4|Portuguese\n"
    )
    with pytest.raises(InputError) as caught:
        settings.read_sheet(sheet, SHEET_SCHEMA)
    assert "row 3" in str(caught.value) and "target_languages" in str(caught.value)


def test_sheet_duplicate_names(tmp_path):
    sheet = write_sheet(tmp_path / "s.tsv", "name|path\na|a.mp4\na|b.mp4\n")
    with pytest.raises(InputError, match="more than once"):
        settings.read_sheet(sheet, SHEET_SCHEMA)


def test_sheet_and_input_dir_combine(tmp_path, validated, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "loose.webm").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.mov").write_bytes(b"x")
    write_sheet(tmp_path / "s.tsv", "name|path\nlisted|elsewhere/x.mov\n")
    validated["samples"] = "s.tsv"
    assert sorted(settings.load_samples(validated, SHEET_SCHEMA)) == ["listed", "loose"]


def test_sheet_rows_with_missing_files_stop_the_run_naming_them(tmp_path, validated, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_sheet(tmp_path / "s.tsv", "name|path\nep1|a.mp4\nep2|b.mp4\n")
    (tmp_path / "a.mp4").write_bytes(b"x")
    validated["samples"] = "s.tsv"
    with pytest.raises(InputError, match=r"lists b\.mp4 for 'ep2', but there is no such file"):
        settings.load_samples(validated, SHEET_SCHEMA)


def test_unknown_target_says_where_to_put_the_video():
    with pytest.raises(InputError, match=r"put it at in/ep09\.<ext>"):
        settings.input_video({}, "ep09", "in")


def test_missing_model_folder_says_how_to_install(tmp_path):
    with pytest.raises(ModelError) as caught:
        check_whisper_model(tmp_path / "nope")
    assert "asr.model" in str(caught.value) and "make setup" in str(caught.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="lacks model.bin, tokenizer.json"):
        check_whisper_model(tmp_path / "half")


def test_relative_model_path_falls_back_to_the_workflow_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = default_config()
    config["asr"]["model"] = "models/whisper-tiny.en"
    settings.preflight(config, ROOT)
    assert config["asr"]["model"] == str(ROOT / "models" / "whisper-tiny.en")
    (tmp_path / "models" / "whisper-tiny.en").mkdir(parents=True)
    config["asr"]["model"] = "models/whisper-tiny.en"
    with pytest.raises(ModelError):  # the working directory's (empty) folder wins
        settings.preflight(config, ROOT)


def test_sheet_diarization_columns_override_nested_keys(tmp_path):
    sheet = write_sheet(tmp_path / "s.tsv",
                        "name|path|speakers|max_speakers|series\nep1|a.mp4|3||Show\nep2|b.mp4||5|\n")
    samples = settings.read_sheet(sheet, SHEET_SCHEMA)
    config = {"diarization": {"num_speakers": None, "max_speakers": None, "series": None}}
    ep1 = settings.settings_for(config, samples["ep1"])["diarization"]
    assert ep1 == {"num_speakers": 3, "max_speakers": None, "series": "Show"}
    ep2 = settings.settings_for(config, samples["ep2"])["diarization"]
    assert ep2 == {"num_speakers": None, "max_speakers": 5, "series": None}
    assert config["diarization"]["num_speakers"] is None  # the global config is untouched


def test_sheet_speaker_count_must_be_a_whole_number(tmp_path):
    sheet = write_sheet(tmp_path / "s.tsv", "name|path|speakers\nep1|a.mp4|two\n")
    with pytest.raises(InputError, match="speakers"):
        settings.read_sheet(sheet, SHEET_SCHEMA)


def test_readme_documents_every_config_key():
    """The README's configuration table lists every leaf key of the schema."""
    import re

    import yaml

    from conftest import ROOT

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def leaves(node, prefix=""):
        properties = node.get("properties") if isinstance(node, dict) else None
        if not properties:
            yield prefix
            return
        for key, child in properties.items():
            yield from leaves(child, f"{prefix}.{key}" if prefix else key)

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):]
    documented = set(re.findall(r"^\| `([\w.]+)`", table, re.M))
    # "diarization.min_speakers`, `max_speakers" style rows document siblings together
    for row in re.findall(r"^\| `([\w.]+)\.(\w+)`, `(\w+)`", table, re.M):
        documented |= {f"{row[0]}.{row[1]}", f"{row[0]}.{row[2]}"}
    missing = sorted(set(leaves(schema)) - documented)
    assert not missing, f"README configuration table lacks {missing}"
