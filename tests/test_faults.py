"""Bad input and faults, through the real Snakemake CLI as a user meets them (issue 7).

Bad input must end in one ``dubflow:`` sentence naming the file, the stage and the fix,
with no traceback and nothing partial in ``out/``. Faults (SIGKILL mid-run, two runs at
once, an unwritable output folder, hostile file names, a token in the environment) must
never corrupt outputs, run anything a name smuggles in, or leak the token.

What is already covered elsewhere is not repeated here: a truncated video, a video without
audio, an unknown top-level config key, one combined awkward name (test_workflow.py);
the ffmpeg runner's own refusals (test_ffmpeg_safe.py); redaction, the batch summary
format and the writable-folder check as functions (test_hardening.py).

Every workspace uses the fast tiny.en model and the 10-second generated speech video; the
two whole-workflow builds (a batch of three, and a run killed three times) are shared by
module-scoped fixtures. Note that ``profiles/default`` (keep-going, rerun-incomplete)
applies to these runs too: Snakemake reads a workflow-specific profile from the
Snakefile's folder even when it is given with ``--snakefile`` from elsewhere.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, TINY_EN
from dubflow.ffmpeg_safe import file_arg, probe, run_ffmpeg
from test_workflow import make_workspace

pytestmark = pytest.mark.model  # starts Snakemake

# A plausible Hugging Face token (hf_ + 34 letters/digits); never a real one.
TOKEN = "hf_" + "FaKeT0kEn" * 3 + "zX9q4bW"
# Hostile names: shell syntax that would run `touch` if any layer used a shell.
BACKTICK_NAME = 'ep `touch pwned-backtick` "quoted" $(touch pwned-subshell)'
DASH_NAME = "-ep 2; --help `touch pwned-dash` ünï"
ODD_PATH = "-odd #3 `touch pwned-path`; $(touch pwned-path2) 'x'.mp4"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def snakemake_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
            "--configfile", "config.yaml", "--cores", "2", *args]


def cli(workspace: Path, *args: str, env: dict | None = None,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, in the workspace (like test_workflow.snakemake)."""
    return subprocess.run([*prefix, *snakemake_argv(*args)], cwd=workspace,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def output_of(run: subprocess.CompletedProcess) -> str:
    # Snakemake prints errors raised while the DAG is built on stdout, job errors on stderr.
    return run.stdout + run.stderr


def dubflow_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("dubflow:")]


def assert_one_sentence(run: subprocess.CompletedProcess, *expected: str,
                        stream: str = "both") -> str:
    """Failed, with exactly one `dubflow:` line holding every expected piece, no traceback."""
    text = {"stderr": run.stderr, "both": output_of(run)}[stream]
    assert run.returncode != 0, output_of(run)[-3000:]
    lines = dubflow_lines(text)
    assert len(lines) == 1, output_of(run)[-3000:]
    for piece in expected:
        assert piece in lines[0], lines[0]
    assert "Traceback" not in output_of(run), output_of(run)[-3000:]
    return lines[0]


def nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def with_sheet(workspace: Path, rows: list[list[str]]) -> Path:
    """Write samples.tsv (make_workspace points the `samples` key at it)."""
    text = "".join("\t".join(row) + "\n" for row in rows)
    (workspace / "samples.tsv").write_text(text, encoding="utf-8")
    return workspace


def streamhash(path: Path) -> list[str]:
    """SHA-256 of every stream's packets: equal iff the streams are bit-identical."""
    run = run_ffmpeg(["-v", "error", "-i", file_arg(path), "-map", "0", "-c", "copy",
                      "-f", "streamhash", "-"], stage="test", path=path)
    return run.stdout.split()


def stream_list(path: Path) -> list[tuple]:
    return [(s.codec_type, s.codec_name, s.language, s.title, s.is_default)
            for s in probe(path, stage="test").streams]


def processes_in(folder: Path) -> list[str]:
    """Live processes whose working directory is the folder (a killed run's leftovers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(f"{folder}/"):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (rc={process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def kill_group(process: subprocess.Popen, workspace: Path) -> list[str]:
    """SIGKILL Snakemake and its whole process group; return what is still running after."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while (left := processes_in(workspace)) and time.monotonic() < deadline:
        time.sleep(0.1)  # ffmpeg (own session) goes by PR_SET_PDEATHSIG, a moment later
    return left


JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
JOB_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def jobs_of(log_text: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(started, finished) jobs of one Snakemake run, each as (rule, its outputs)."""
    started: dict[int, tuple[str, str]] = {}
    finished: set[int] = set()
    rule, outputs = None, ""
    for line in log_text.splitlines():
        if match := JOB_HEADER.match(line):
            rule, outputs = match[1], ""
        elif rule and line.strip().startswith("output: "):
            outputs = line.strip()[len("output: "):]
        elif rule and line.strip().startswith("jobid: "):
            started[int(line.strip()[len("jobid: "):])] = (rule, outputs)
            rule = None
        elif match := JOB_FINISHED.match(line):
            finished.add(int(match[1]))
    return set(started.values()), {started[j] for j in finished if j in started}


# --------------------------------------------------------------------------------------
# Shared media and builds
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audio_only(media_dir, speech_video) -> Path:
    """An .m4a (AAC, no video stream) cut from the speech video."""
    m4a = media_dir / "voice.m4a"
    if not m4a.exists():
        run_ffmpeg(["-i", file_arg(speech_video[0]), "-vn", "-c:a", "copy", "-t", "6",
                    file_arg(m4a)], stage="test", path=m4a)
    return m4a


def text_file(folder: Path, name: str = "notes.mp4") -> Path:
    path = folder / name
    path.write_text("These are my notes, not a video.\n" * 20)
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory, speech_video, audio_only):
    """A batch of three with --keep-going: a good video, an audio-only file, an empty file."""
    empty = tmp_path_factory.mktemp("batch-media") / "empty.mp4"
    empty.write_bytes(b"")
    ws = make_workspace(tmp_path_factory.mktemp("batch"), {
        "ep": speech_video[0], "voice": audio_only, "broken": empty}, fast=True)
    run = cli(ws, "--keep-going")
    return ws, run


@pytest.fixture(scope="module")
def killed(tmp_path_factory, speech_video):
    """One video, SIGKILLed three times (process group) and resumed each time.

    1. after extract finished (diarize has started) - and, at that moment, a second run
       on the same folder, which must be refused by Snakemake's lock;
    2. during transcribe (its log is open, the model is loading);
    3. during mix (its temp .partial file is being written).
    After each kill: `--unlock` (after the first kill, a plain re-run first, which the
    stale lock refuses), then the same command again, until one run finishes. Records
    everything for the tests below.
    """
    ws = make_workspace(tmp_path_factory.mktemp("killed"), {"ep": speech_video[0]}, fast=True)
    pt = ws / "work" / "ep" / "pt"
    points = {
        "extract finished": lambda: (ws / "logs" / "ep" / "diarize.log").exists(),
        "transcribe": lambda: (ws / "logs" / "ep" / "transcribe.log").exists(),
        "mix": lambda: pt.is_dir() and any(pt.glob(".dub.*.partial.wav")),
    }
    record = {"runs": [], "states": {}, "leftover_processes": {}, "unlock": []}
    for index, (point, reached) in enumerate(points.items()):
        if index == 1:  # once is enough to show it; the later ones only unlock
            record["relock"] = cli(ws, "out/ep.mkv")
        if index:
            record["unlock"].append(cli(ws, "--unlock"))
        log = ws / f"run-{index}.log"
        with open(log, "w") as sink:
            process = subprocess.Popen(snakemake_argv("out/ep.mkv"), cwd=ws, stdout=sink,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(reached, process, point)
            if index == 0:
                record["concurrent"] = cli(ws, "out/ep.mkv")
                assert process.poll() is None, "the first run ended during the lock probe"
        finally:
            record["leftover_processes"][point] = kill_group(process, ws)
        record["runs"].append(log.read_text())
        record["states"][point] = {
            str(p.relative_to(ws)) for p in ws.rglob("*") if p.is_file()
            and p.relative_to(ws).parts[0] not in (".snakemake", "cache")}
    record["unlock"].append(cli(ws, "--unlock"))
    final = cli(ws, "out/ep.mkv")
    record["final"] = final
    record["runs"].append(final.stdout + final.stderr)
    return ws, record


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_text_file_renamed_mp4_fails_at_extract_with_one_sentence(tmp_path):
    """(A zero-byte file is the bad video of the batch test below.)"""
    ws = make_workspace(tmp_path / "ws", {"clip": text_file(tmp_path)}, fast=True)
    run = cli(ws, "out/clip.mkv")
    assert_one_sentence(run, "in/clip.mp4", "(stage extract)", "re-export", stream="stderr")
    assert nothing_in(ws / "out")
    assert "clip\tfailed\t" in (ws / "logs" / "batch-summary.tsv").read_text()


@pytest.mark.slow
def test_batch_keeps_going_past_one_bad_video(batch):
    ws, run = batch
    assert run.returncode != 0  # one video failed, and the exit code says so
    for name in ("ep", "voice"):
        assert (ws / "out" / f"{name}.mkv").is_file()
        assert (ws / "out" / f"{name}.report.html").is_file()
    assert not any((ws / "out").glob("broken*"))
    sentence = assert_one_sentence(run, "in/broken.mp4", "(stage extract)", "re-export",
                                   stream="stderr")
    reason = sentence.removeprefix("dubflow: ")
    summary = run.stderr[run.stderr.rindex("dubflow batch:"):].splitlines()
    assert summary[:4] == [
        "dubflow batch: 2 done, 1 failed, 0 not built",
        f"  broken: failed: {reason} (log: logs/broken/extract.log)",
        "  ep: done",
        "  voice: done",
    ], run.stderr[-3000:]
    table = (ws / "logs" / "batch-summary.tsv").read_text().splitlines()
    assert table == [
        "name\tstatus\treason\tlog",
        f"broken\tfailed\t{reason}\tlogs/broken/extract.log",
        "ep\tdone\t\tout/ep.mkv",
        "voice\tdone\t\tout/voice.mkv",
    ]
    assert reason in (ws / "logs" / "broken" / "extract.log").read_text()


@pytest.mark.slow
def test_audio_only_input_gets_an_mkv_with_audio_tracks_only(batch):
    ws, _ = batch
    info = probe(ws / "out" / "voice.mkv", stage="test")
    assert info.video_streams == []
    dub, original = info.audio_streams
    assert (dub.language, dub.title, dub.is_default) == ("por", "Portuguese dub", True)
    assert (original.language, original.title, original.is_default) == (
        "eng", "Original (English)", False)
    assert [s.codec_type for s in info.streams] == ["audio", "audio", "subtitle", "subtitle"]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"target_languages": ["de"]},
         ["translation backend 'bergamot' cannot translate into de",
          "set translation.backend to ctranslate2"]),
        ({"mix": {"max_speedup": 5}},
         ["key 'mix.max_speedup' is invalid", "maximum of 2.0"]),
        ({"subtitles": {"max_chars": 30}},
         ["unknown key(s) 'max_chars' under 'subtitles'", "max_chars_per_line"]),
    ],
    ids=["unsupported-language", "out-of-range", "unknown-nested-key"],
)
def test_bad_config_stops_the_dry_run_before_any_job(tmp_path, speech_video, overrides, expected):
    ws = make_workspace(tmp_path, {"x": speech_video[0]}, **overrides, fast=True)
    run = cli(ws, "-n", "out/x.mkv")
    assert_one_sentence(run, *expected)
    assert not (ws / "work").exists() and not (ws / "out").exists()


def broken_model(folder: Path, weights: bytes) -> Path:
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(TINY_EN / name, folder / name)
    (folder / "model.bin").write_bytes(weights)
    return folder


def translation_model_header() -> bytes:
    """The first bytes of a CTranslate2 translation model: right format, wrong family."""
    name = b"TransformerSpec\0"
    return (6).to_bytes(4, "little") + len(name).to_bytes(2, "little") + name + bytes(64)


def test_garbage_whisper_model_is_refused_before_any_job(tmp_path, speech_video):
    model = broken_model(tmp_path / "whisper-broken", b"<html>404 Not Found</html>" * 10)
    ws = make_workspace(tmp_path / "ws", {"x": speech_video[0]}, asr={"model": str(model)}, fast=True)
    run = cli(ws, "-n", "out/x.mkv")
    assert_one_sentence(run, str(model), "asr.model", "is not a CTranslate2 model",
                        "make setup")
    assert not (ws / "work").exists()


@pytest.mark.parametrize(
    "weights, problem",
    [(b"", "is empty"),
     (b"\x06\x00", "is not a CTranslate2 model"),
     (translation_model_header(), "holds a CTranslate2 TransformerSpec, not a Whisper model")],
    ids=["empty", "cut-in-header", "wrong-family"],
)
def test_whisper_model_header_check(tmp_path, weights, problem):
    """The same preflight check as above, without the CLI, for the other kinds of damage."""
    from dubflow.errors import ModelError
    from dubflow.whisper_model import check_whisper_model

    model = broken_model(tmp_path / "whisper-broken", weights)
    with pytest.raises(ModelError) as caught:
        check_whisper_model(model)
    assert str(model) in str(caught.value) and problem in str(caught.value)
    check_whisper_model(TINY_EN)  # the real one passes


def test_damaged_whisper_model_fails_at_transcribe_naming_the_folder(tmp_path, speech_video):
    """Preflight reads only the header; a file cut short after it fails when loaded."""
    from extract import extract

    good = (TINY_EN / "model.bin").read_bytes()[:4096]
    model = broken_model(tmp_path / "whisper-cut", good)
    ws = make_workspace(tmp_path / "ws", {"x": speech_video[0]}, asr={"model": str(model)}, fast=True)
    work = ws / "work" / "x"  # extract and diarize done already: run only transcribe
    extract(ws / "in" / "x.mp4", work / "audio.wav", work / "source.wav")
    (work / "speakers.rttm").write_text("")
    run = cli(ws, "work/x/transcript.json")
    sentence = assert_one_sentence(run, str(model), "asr.model", "transcribe", stream="stderr")
    assert "unexpected" not in sentence
    assert not (work / "transcript.json").exists()


# --------------------------------------------------------------------------------------
# The samples sheet
# --------------------------------------------------------------------------------------

HEADER = ["name", "path"]


SHEET_PROBLEMS = {
    "duplicate": ([HEADER, ["ep", "in/x.mp4"], ["ep", "in/x.mp4"]], ["'ep' more than once"]),
    "unknown-column": ([HEADER + ["spekers"], ["ep", "in/x.mp4", "2"]],
                       ["unknown column(s) 'spekers'", "speakers"]),
    "no-path-column": ([["name", "file"], ["ep", "in/x.mp4"]], ["has no 'path' column"]),
    "slash": ([HEADER, ["season/ep", "in/x.mp4"]],
              ["row 2", "column 'name' is invalid: 'season/ep' is not allowed", "letters"]),
    "newline": ([HEADER, ['"ep\n1"', "in/x.mp4"]], ["row 2", "'ep\\n1' is not allowed"]),
    "leading-dash": ([HEADER, ["-ep", "in/x.mp4"]],
                     ["'-ep' is not allowed", "must not start with -"]),
    "dot-dot": ([HEADER, ["..", "in/x.mp4"]], ["'..' is not allowed"]),
    "shell-syntax": ([HEADER, ["ep; $(x)", "in/x.mp4"]], ["'ep; $(x)' is not allowed"]),
    "tab-in-name": ([HEADER, ['"ep\t1"', "in/x.mp4"]], ["'ep\\t1' is not allowed"]),
}


@pytest.mark.parametrize("problem", ["unknown-column", "slash"])
def test_bad_samples_sheet_stops_the_dry_run(tmp_path, speech_video, problem):
    rows, expected = SHEET_PROBLEMS[problem]
    ws = with_sheet(make_workspace(tmp_path, {"x": speech_video[0]}, fast=True), rows)
    run = cli(ws, "-n")
    assert_one_sentence(run, "samples.tsv", *expected)
    assert not (ws / "work").exists()


@pytest.mark.parametrize("problem", sorted(SHEET_PROBLEMS))
def test_samples_sheet_problems_are_one_sentence(tmp_path, problem):
    """Every kind of sheet problem, through the loader the CLI runs (two of them above)."""
    from dubflow.errors import InputError
    from dubflow.settings import read_sheet

    rows, expected = SHEET_PROBLEMS[problem]
    sheet = with_sheet(tmp_path, rows) / "samples.tsv"
    with pytest.raises(InputError) as caught:
        read_sheet(sheet, ROOT / "workflow" / "schemas" / "samples.schema.yaml")
    message = str(caught.value)
    assert "\n" not in message and str(sheet) in message
    for piece in expected:
        assert piece in message, message


def test_sheet_layout_quirks_keep_every_cell_in_its_column(tmp_path):
    """A '#' inside a path is data, not a comment; comment lines (indented too), blank
    lines, a byte-order mark and a spreadsheet's trailing tabs change nothing."""
    from dubflow.settings import read_sheet

    sheet = tmp_path / "samples.tsv"
    sheet.write_text("\ufeffname\tpath\tspeakers\t\n"
                     "# comment\n"
                     "  # indented comment\n"
                     "\n"
                     "ep1\tin/Episode #1.mp4\t2\t\t\n"
                     "ep2\tin/ep2.mp4\n", encoding="utf-8")
    samples = read_sheet(sheet, ROOT / "workflow" / "schemas" / "samples.schema.yaml")
    assert [(s.name, s.path, s.overrides) for s in samples.values()] == [
        ("ep1", "in/Episode #1.mp4", {"speakers": 2}), ("ep2", "in/ep2.mp4", {})]


@pytest.mark.parametrize("text, expected", [
    ("name\tpath\nep\tin/ep.mp4\t2\n", ["row 2 of the file", "'2' has no column"]),
    ("# about\nname\tpath\n\nep\tep.mp4\tx\n", ["row 4 of the file"]),
    ("name\t\tpath\nep\tx\tin/ep.mp4\n", ["column without a name (column 2"]),
    ('name\tpath\nep\t"in/ep.mp4\n', ["cannot be read", "double quote"]),
])
def test_sheet_cells_that_fit_no_column_are_refused(tmp_path, text, expected):
    from dubflow.errors import InputError
    from dubflow.settings import read_sheet

    sheet = tmp_path / "samples.tsv"
    sheet.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_sheet(sheet, ROOT / "workflow" / "schemas" / "samples.schema.yaml")
    for piece in expected:
        assert piece in str(caught.value), str(caught.value)


def test_safe_sheet_names_pass(tmp_path):
    """Unicode letters (composed or not), marks, digits, space and . _ - ' are fine."""
    import unicodedata

    from dubflow.settings import read_sheet

    names = ["ep01", "it's ep 1", "Amélie_2.final", unicodedata.normalize("NFD", "Amélie"),
             "नमस्ते", "第1話", "x..y"]
    sheet = with_sheet(tmp_path, [HEADER, *[[n, f"-odd `{i}`; $(x).mp4"]
                                            for i, n in enumerate(names)]]) / "samples.tsv"
    samples = read_sheet(sheet, ROOT / "workflow" / "schemas" / "samples.schema.yaml")
    assert list(samples) == names


@pytest.fixture(scope="module")
def missing_file_run(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("missing"), {}, fast=True)
    with_sheet(ws, [HEADER, ["ep", "footage/ep.mp4"]])
    return ws, cli(ws, "-n", "out/ep.mkv")


def test_sheet_row_with_a_missing_file_names_it(missing_file_run):
    ws, run = missing_file_run
    assert run.returncode != 0
    assert ("dubflow: the samples sheet samples.tsv lists footage/ep.mp4 for 'ep', but there is "
            "no such file or it cannot be read; fix its path column") in output_of(run)
    assert not (ws / "work").exists()


def test_sheet_row_with_a_missing_file_has_no_traceback(missing_file_run):
    _, run = missing_file_run
    assert_one_sentence(run, "footage/ep.mp4", "fix its path column")


def test_video_named_with_a_line_break_is_refused(tmp_path, speech_video):
    ws = make_workspace(tmp_path, {"ep\n1": speech_video[0], "ok": speech_video[0]}, fast=True)
    run = cli(ws, "-n")
    assert_one_sentence(run, "in/ep\\n1.mp4", "line break", "rename the file")
    assert not (ws / "work").exists()


# --------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_run_on_a_busy_folder_gets_the_lock_message(killed):
    _, record = killed
    second = record["concurrent"]
    assert second.returncode != 0
    assert "Directory cannot be locked" in output_of(second)
    assert "ep: " not in second.stderr  # it did not run the batch hooks over the first run


@pytest.mark.slow
def test_after_sigkill_the_lock_stays_until_unlock(killed):
    """What the README tells a user: the same command says the folder is locked until
    `snakemake --unlock`; then (rerun-incomplete from profiles/default) it resumes."""
    _, record = killed
    relock = record["relock"]
    assert relock.returncode != 0 and "Directory cannot be locked" in output_of(relock)
    assert "--unlock" in output_of(relock)
    assert len(record["unlock"]) == 3
    for unlock in record["unlock"]:
        assert unlock.returncode == 0 and "Unlocked working directory" in output_of(unlock)


def test_readme_tells_how_to_recover_from_a_stale_lock():
    readme = (ROOT / "README.md").read_text()
    assert "Directory cannot be locked" in readme and "snakemake --unlock" in readme


@pytest.mark.slow
def test_each_kill_hit_its_stage_and_left_no_process(killed):
    """Each kill came while its stage ran (read from that run's own log, not from which
    files happen to exist: how far the other parallel jobs got depends on the machine)."""
    ws, record = killed
    states = record["states"]
    runs = [jobs_of(text) for text in record["runs"]]
    (started0, finished0), (started1, finished1), (started2, finished2) = runs[:3]
    rules = lambda jobs: {rule for rule, _ in jobs}  # noqa: E731
    assert "extract" in rules(finished0) and "diarize" in rules(started0)
    assert "transcribe" in rules(started1) - rules(finished1)
    assert "mix" in rules(started2) - rules(finished2)
    work = "work/ep/"
    assert {work + "audio.wav", work + "source.wav"} <= states["extract finished"]
    assert work + "pt/dub.wav" not in states["mix"]
    assert any(".partial" in p for p in states["mix"])  # killed mid-write
    assert not any(p == "out/ep.mkv" or (p.startswith("out/") and "partial" in p)
                   for point in states for p in states[point])
    assert record["leftover_processes"] == {point: [] for point in states}


@pytest.mark.slow
def test_resume_redoes_only_the_jobs_that_had_not_finished(killed):
    _, record = killed
    assert record["final"].returncode == 0, record["final"].stderr[-3000:]
    done: collections.Counter = collections.Counter()
    for index, text in enumerate(record["runs"]):
        started, finished = jobs_of(text)
        redone = started & set(done)
        assert not redone, f"run {index} redid finished jobs: {sorted(redone)}"
        done.update(finished)
    assert set(done.values()) == {1}
    rules = collections.Counter(rule for rule, _ in done)
    # A short job (subtitles) can end in the instant of a kill, before Snakemake logs
    # "Finished": its output is complete and no later run redoes it, so it is counted
    # at most, not exactly, once. Every other stage is long enough to be seen.
    assert {r: n for r, n in rules.items() if r != "subtitles"} == {
        "extract": 1, "diarize": 1, "speaker_ids": 1, "transcribe": 1, "translate": 1, "synthesize": 1,
        "mix": 1, "mux": 1}, rules
    assert 1 <= rules["subtitles"] <= 2, rules


def same_sound(a: Path, b: Path) -> bool:
    """Equal up to espeak-ng's drift: it carries its pitch-flutter phase from one utterance
    to the next (and no API resets it), so a line synthesized after other lines can differ
    by a sample or two. Same length within 10 ms and the same 50 ms loudness envelope."""
    import numpy as np
    import soundfile as sf

    x, rate = sf.read(a, dtype="float32", always_2d=True)
    y, _ = sf.read(b, dtype="float32", always_2d=True)
    if abs(len(x) - len(y)) > rate // 100:
        return False
    n, hop = min(len(x), len(y)), rate // 20

    def envelope(z):
        frames = z[: n - n % hop].mean(axis=1).reshape(-1, hop)
        return np.sqrt((frames ** 2).mean(axis=1))

    ex, ey = envelope(x), envelope(y)
    return float(np.corrcoef(ex, ey)[0, 1]) > 0.99 and abs(ex.mean() - ey.mean()) < 0.01


@pytest.mark.slow
def test_resumed_outputs_equal_an_uninterrupted_run(killed, batch):
    resumed, _ = killed
    reference, _ = batch
    for rel in ["work/ep/transcript.json", "work/ep/speakers.rttm",
                "work/ep/pt/translation.json",
                "out/ep.en.srt", "out/ep.pt.srt", "out/ep.en.vtt", "out/ep.pt.vtt"]:
        assert (resumed / rel).read_bytes() == (reference / rel).read_bytes(), rel
    assert same_sound(resumed / "work/ep/pt/dub.wav", reference / "work/ep/pt/dub.wav")
    fits = [json.loads((ws / "work/ep/pt/fit.json").read_text()) for ws in (resumed, reference)]
    assert [(line["id"], line["flags"]) for line in fits[0]["lines"]] == [
        (line["id"], line["flags"]) for line in fits[1]["lines"]]
    # espeak-ng is not bit-exact, so the two dubs are metered a tenth of a LU apart or so
    loudness = [fit["loudness"]["output_i"] for fit in fits]
    assert all(abs(value - fits[0]["loudness"]["target_lufs"]) <= 0.5 for value in loudness)
    assert abs(loudness[0] - loudness[1]) <= 0.2 + 1e-6
    mkv = "out/ep.mkv"
    assert stream_list(resumed / mkv) == stream_list(reference / mkv)
    hashes = [streamhash(ws / mkv) for ws in (resumed, reference)]
    # every stream bit-identical but the dub (stream 1), compared by sound above
    assert [h for h in hashes[0] if not h.startswith("1,")] == [
        h for h in hashes[1] if not h.startswith("1,")]


@pytest.mark.slow
def test_no_partial_file_is_left_after_the_resume(killed):
    ws, _ = killed
    assert [str(p.relative_to(ws)) for p in ws.rglob("*.partial*")] == []


def test_file_where_the_output_folder_should_be(tmp_path, speech_video):
    ws = make_workspace(tmp_path, {"x": speech_video[0]}, fast=True)
    (ws / "out").write_text("not a folder")
    run = cli(ws, "out/x.mkv")
    assert_one_sentence(run, f"{ws / 'out'} cannot be written", "fix its permissions")
    assert (ws / "out").read_text() == "not a folder"
    assert not (ws / "work").exists()


def read_only_mount(folder: Path) -> tuple[str, ...] | None:
    """A command prefix that runs the rest with `folder` bind-mounted read-only, in a private
    mount namespace (root ignores permission bits, but not a read-only mount)."""
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"',
              "sh", str(folder))
    if shutil.which("unshare") is None:
        return None
    probe_run = subprocess.run([*prefix, "touch", str(folder / "probe")], capture_output=True)
    if probe_run.returncode == 0 or (folder / "probe").exists():
        return None
    if b"Read-only file system" not in probe_run.stderr:
        return None  # no namespaces or mount here
    return prefix


def test_read_only_output_folder(tmp_path, speech_video):
    ws = make_workspace(tmp_path, {"x": speech_video[0]}, fast=True)
    (ws / "out").mkdir()
    (ws / "out" / "old.mkv").write_bytes(b"a finished deliverable")
    prefix = read_only_mount(ws / "out")
    if prefix is None:
        pytest.skip("cannot bind-mount read-only here (needs unshare and mount)")
    run = cli(ws, "out/x.mkv", prefix=prefix)
    assert_one_sentence(run, f"{ws / 'out'} cannot be written", "read-only file system")
    assert sorted(p.name for p in (ws / "out").iterdir()) == ["old.mkv"]
    assert not (ws / "work").exists()


def test_hostile_names_plan_and_run_a_stage_without_executing_anything(tmp_path, speech_video):
    """Backticks, $(), quotes, ;, a leading dash and unicode, in target names (in/) and in
    a sheet path (any file name is fine there; the sheet's name must be safe)."""
    ws = make_workspace(tmp_path, {BACKTICK_NAME: speech_video[0], DASH_NAME: speech_video[0]}, fast=True)
    (ws / "odd").mkdir()
    shutil.copy(speech_video[0], ws / "odd" / ODD_PATH)
    with_sheet(ws, [HEADER, ["listed ep", f"odd/{ODD_PATH}"]])
    names = [BACKTICK_NAME, DASH_NAME, "listed ep"]
    dry = cli(ws, "-n", *[f"out/{n}.mkv" for n in names])
    assert dry.returncode == 0, output_of(dry)[-3000:]
    run = cli(ws, *[f"work/{n}/audio.wav" for n in names])
    assert run.returncode == 0, output_of(run)[-3000:]
    for name in names:
        audio = probe(ws / "work" / name / "audio.wav", stage="test").streams[0]
        assert (audio.sample_rate, audio.channels) == (16000, 1)
        assert "stage extract done" in (ws / "logs" / name / "extract.log").read_text()
    smuggled = [p for p in [*ws.rglob("pwned*"), *Path.cwd().glob("pwned*"),
                            *ROOT.glob("pwned*")]]
    assert smuggled == []


# --------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------


def files_containing(folder: Path, needle: str) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(folder)))
    return hits


@pytest.mark.slow
def test_hub_token_never_reaches_output_or_logs(tmp_path, speech_video):
    """pyannote-hub with a hub id fails offline; the token in HF_TOKEN must not show."""
    ws = make_workspace(tmp_path, {"x": speech_video[0]}, diarization={
        "backend": "pyannote-hub", "pipeline": "pyannote/speaker-diarization-community-1"}, fast=True)
    # --verbose: the loudest Snakemake gets (it adds full tracebacks of the failed job)
    run = cli(ws, "--verbose", "out/x.mkv", env={"HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"})
    assert run.returncode != 0
    sentences = dubflow_lines(run.stderr)
    assert len(sentences) == 1 and "pyannote/speaker-diarization-community-1" in sentences[0]
    assert "diarization.pipeline" in sentences[0]
    assert TOKEN not in output_of(run)
    assert "stage diarize for x" in (ws / "logs" / "x" / "diarize.log").read_text()
    assert list((ws / ".snakemake" / "log").glob("*.log"))
    # every file the runs wrote: logs/, .snakemake/log/, metadata, the effective config
    assert files_containing(ws, TOKEN) == []


def test_token_pasted_into_the_config_is_refused(tmp_path, speech_video):
    """Snakemake itself prints changed params and stores them in .snakemake/metadata,
    where no redaction reaches: a token must not get into the config at all."""
    ws = make_workspace(tmp_path, {"x": speech_video[0]}, diarization={
        "backend": "pyannote-hub", "pipeline": f"https://user:{TOKEN}@example.org/pipe"}, fast=True)
    run = cli(ws, "-n", "out/x.mkv", env={"HF_TOKEN": ""})
    assert_one_sentence(run, "'diarization.pipeline'", "looks like an access token",
                        "environment")
    assert TOKEN not in output_of(run)
    assert [f for f in files_containing(ws, TOKEN) if f != "config.yaml"] == []
