"""Atomic writes leave the old file or the complete new one, never a partial file."""

import tempfile
from pathlib import Path

import pytest

from dubflow.atomic import atomic_path, write_json, write_text


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


def left_by_a_killed_writer(dest: Path) -> Path:
    """A temp file named exactly as atomic_path names it for ``dest``, left behind."""
    with pytest.raises(KeyboardInterrupt), atomic_path(dest) as tmp:
        name = tmp.name
        raise KeyboardInterrupt
    left = dest.parent / name
    left.write_bytes(b"half")
    return left


def test_temps_left_by_a_killed_writer_are_removed_before_the_next(tmp_path):
    from dubflow.atomic import remove_stale_temps

    dest = tmp_path / "dub.wav"
    left = [left_by_a_killed_writer(dest),  # and a scratch folder of a killed mix
            Path(tempfile.mkdtemp(prefix=".dub.", suffix=".partial.wav", dir=tmp_path))]
    (left[1] / "control.wav").write_bytes(b"x")
    keep = [tmp_path / "dub.wav.bak", tmp_path / ".dubbing.partial.wav", tmp_path / "fit.json",
            left_by_a_killed_writer(tmp_path / "dub.mka")]  # same stem, another output
    for path in keep[:3]:
        path.write_text("mine")
    assert sorted(remove_stale_temps(dest)) == sorted(left)
    assert not any(p.exists() for p in left) and all(p.exists() for p in keep)


def test_stale_temps_of_one_output_never_include_another_jobs_files(tmp_path):
    """mux (out/ep.mkv) starts while report, subtitles and subtitles_ass write theirs: a
    wider match once deleted their temp files under them."""
    from dubflow.atomic import remove_stale_temps

    busy = [left_by_a_killed_writer(tmp_path / name)
            for name in ["ep.report.html", "ep.pt.vtt", "ep.pt.ass", "ep.en.srt"]]
    ours = left_by_a_killed_writer(tmp_path / "ep.mkv")
    assert remove_stale_temps(tmp_path / "ep.mkv") == [ours]
    assert remove_stale_temps(tmp_path / "ep.pt.srt") == []
    assert all(path.exists() for path in busy)


def test_a_folder_output_is_replaced_whole_or_not_at_all(tmp_path):
    """atomic_dir: the new folder replaces the old one only when its block succeeds; a
    folder left by a killed writer is cleared first; nothing hidden stays."""
    from dubflow.atomic import atomic_dir

    dest = tmp_path / "clips"
    with atomic_dir(dest) as tmp:
        (tmp / "a.webm").write_bytes(b"one")
    assert sorted(p.name for p in dest.iterdir()) == ["a.webm"]
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "b.webm").write_bytes(b"half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in dest.iterdir()) == ["a.webm"]  # the old one, untouched
    stale = Path(tempfile.mkdtemp(prefix=".clips.", suffix=".partial", dir=tmp_path))
    with atomic_dir(dest) as tmp:
        (tmp / "c.webm").write_bytes(b"two")
    assert not stale.exists()
    assert sorted(p.name for p in dest.iterdir()) == ["c.webm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips"]
