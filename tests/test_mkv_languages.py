"""BCP-47 language elements added in place to an mkv ffmpeg wrote (dubflow.mkv_languages)."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from dubflow.errors import InputError
from dubflow.ffmpeg_needs import muxer
from dubflow.ffmpeg_safe import file_arg, run_ffmpeg
from dubflow.languages import bcp47
from dubflow.mkv_languages import (CLUSTER, CRC32, PADDING, SEEK_HEAD, _children, _element,
                                   add_bcp47)

needs_mkvmerge = pytest.mark.skipif(shutil.which("mkvmerge") is None,
                                    reason="needs mkvmerge (Debian's mkvtoolnix)")


def make_mkv(path: Path, languages: list[str], padding: int | None = PADDING,
             font: Path | None = None) -> Path:
    """Tracks of a second of tone, tagged with ``languages``, plus tags (and a font)."""
    args = []
    for i, _ in enumerate(languages):
        args += ["-f", "lavfi", "-i", f"sine=frequency={300 + 100 * i}:duration=1"]
    for i in range(len(languages)):
        args += ["-map", f"{i}:a"]
    for i, language in enumerate(languages):
        args += [f"-metadata:s:a:{i}", f"language={language}",
                 f"-metadata:s:a:{i}", f"title=Track {i}"]
    if font is not None:
        args += ["-attach", file_arg(font), "-metadata:s:t", "mimetype=font/ttf"]
    options = {"metadata_header_padding": padding} if padding else {}
    run_ffmpeg([*args, "-c:a", "flac", *muxer("matroska", **options), file_arg(path)],
               stage="test", path=path)
    return path


def identify(path: Path) -> dict:
    return json.loads(subprocess.run(["mkvmerge", "-J", str(path)], capture_output=True,
                                     text=True, check=True).stdout)


def crcs_hold(path: Path) -> int:
    """Check every CRC-32 element of the header's masters (SeekHead, Info, Tracks, Tags):
    the CRC of the rest of its parent's data. Returns how many were checked."""
    data = path.read_bytes()
    segment = _element(data, _element(data, 0).end)
    checked, pos = 0, segment.data
    while True:
        element = _element(data, pos)
        if element.id == CLUSTER:
            return checked
        try:
            children = _children(data, element.data, element.end)
        except (ValueError, IndexError):
            children = []  # not a master (a Void)
        if children and children[0].id == CRC32:
            stored = int.from_bytes(data[children[0].data:children[0].end], "little")
            assert stored == zlib.crc32(data[children[0].end:element.end]), hex(element.id)
            checked += 1
        pos = element.end


def decodes(path: Path) -> bool:
    run = run_ffmpeg(["-v", "error", "-i", file_arg(path), "-f", "null", "-"], stage="test",
                     path=path)
    return run.returncode == 0


@needs_mkvmerge
def test_every_track_gets_its_bcp47_language_and_the_file_stays_valid(tmp_path):
    font = tmp_path / "font.ttf"
    font.write_bytes(bytes(range(256)) * 40)  # moved along with the tags: bytes must survive
    mkv = make_mkv(tmp_path / "a.mkv", ["por", "eng", "ger", "jpn", "und"], font=font)
    assert crcs_hold(mkv) >= 3  # ffmpeg writes them: the check itself holds on its file
    before = identify(mkv)
    assert all("language_ietf" not in t["properties"] for t in before["tracks"])
    assert add_bcp47(mkv) == 5
    after = identify(mkv)
    assert after["errors"] == [] and after["warnings"] == []
    assert [t["properties"]["language_ietf"] for t in after["tracks"]] == [
        "pt", "en", "de", "ja", "und"]
    assert [t["properties"]["track_name"] for t in after["tracks"]] == [
        f"Track {i}" for i in range(5)]
    assert after["attachments"][0]["size"] == font.stat().st_size
    extracted = tmp_path / "out.ttf"
    subprocess.run(["mkvextract", str(mkv), "attachments", f"1:{extracted}"], check=True,
                   capture_output=True)
    assert extracted.read_bytes() == font.read_bytes()
    assert decodes(mkv)
    assert crcs_hold(mkv) >= 3
    assert add_bcp47(mkv) == 0  # a second pass finds them all present


@pytest.mark.parametrize("languages", [["por"], ["eng", "eng"], ["spa", "fre", "ita"],
                                       ["und"] * 4, ["jpn", "por", "eng", "ger", "ita", "rus"]])
def test_seek_heads_and_checksums_stay_right_whatever_the_bytes(tmp_path, languages):
    """Each file's CRC-32s and UIDs are different bytes; the SeekHead's own CRC-32 once
    parsed as a seek entry crashed the stage on one of them."""
    mkv = make_mkv(tmp_path / "v.mkv", languages)
    assert add_bcp47(mkv) == len(languages)
    assert crcs_hold(mkv) >= 3
    assert decodes(mkv)
    if shutil.which("mkvmerge"):
        report = identify(mkv)
        assert report["errors"] == [] and report["warnings"] == []
        assert [t["properties"]["language_ietf"] for t in report["tracks"]] == [
            bcp47(code) for code in languages]


def test_an_mkv_without_room_is_refused_in_one_sentence_and_left_alone(tmp_path):
    mkv = make_mkv(tmp_path / "tight.mkv", ["por", "eng"], padding=None)
    data = mkv.read_bytes()
    with pytest.raises(InputError, match=r"tight\.mkv has no free space before its first "
                                         r"cluster .*stage mux.*run the mux stage again"):
        add_bcp47(mkv)
    assert mkv.read_bytes() == data


def test_bcp47_codes():
    assert [bcp47(c) for c in ("por", "pt", "fre", "ger", "chi", "xx", "fil")] == [
        "pt", "pt", "fr", "de", "zh", "und", "fil"]


def test_a_seek_heads_checksum_is_never_read_as_a_seek_entry(tmp_path):
    """The SeekHead starts with its CRC-32, whose 4 bytes are arbitrary: zeros are not even
    a valid EBML number. They are skipped, and written anew once the positions change."""
    mkv = make_mkv(tmp_path / "z.mkv", ["por", "eng"])
    data = bytearray(mkv.read_bytes())
    segment = _element(data, _element(data, 0).end)
    head = _element(data, segment.data)
    assert head.id == SEEK_HEAD
    crc = _children(data, head.data, head.end)[0]
    assert crc.id == CRC32
    data[crc.data:crc.end] = bytes(4)
    mkv.write_bytes(data)
    assert add_bcp47(mkv) == 2
    assert crcs_hold(mkv) >= 3 and decodes(mkv)
