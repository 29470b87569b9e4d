"""Atomic writes leave the old file or the complete new one, never a partial file."""

import pytest

from atomic import atomic_path, write_json, write_text


def test_success_replaces_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "out" / "a.json"
    write_json(dest, {"é": 1})
    assert dest.read_text(encoding="utf-8").strip().startswith("{")
    assert [p.name for p in dest.parent.iterdir()] == ["a.json"]


def test_failure_keeps_the_old_file(tmp_path):
    dest = tmp_path / "a.txt"
    write_text(dest, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half of the ne")
            raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temp_keeps_suffix_for_format_detection(tmp_path):
    with atomic_path(tmp_path / "movie.mkv") as tmp:
        assert tmp.suffix == ".mkv" and tmp.parent == tmp_path and tmp.name.startswith(".")
        tmp.write_bytes(b"x")


def test_empty_media_is_not_published(tmp_path):
    dest = tmp_path / "x.wav"
    with pytest.raises(OSError, match="nothing was written"):
        with atomic_path(dest):
            pass
    assert not dest.exists()
