"""Acceptance for line fitting: a dense two-speaker dialogue dubbed en -> pt.

Two voices (one low, one high) talk fast with short pauses (0.15-0.4 s), and some
sentences are spoken in two pieces with a pause inside them, where Whisper cuts its
segments. The dub must keep whole sentences, never cut a word, stay within the speed
limit and the lead, and give subtitles a viewer can read. The figures are printed.
"""

from __future__ import annotations

import json
import re

import pysubs2
import pytest

from conversation import conversation, write_wav
from demo_media import make_video
from dubflow.sentences import ends_sentence
from test_workflow import make_workspace, snakemake

pytestmark = pytest.mark.slow
NAME = "dense"
# (voice, text): a sentence in two pieces is two entries of the same voice.
SCRIPT = [
    ("joe", "Okay, so I thought you knew about the meeting this morning."),
    ("joe_high", "No, nobody told me anything about it."),
    ("joe", "Well, there is not much difference between the two offices."),
    ("joe", "At least you know,"),
    ("joe", "they all call me a stranger down here."),
    ("joe_high", "That is funny, because I feel the same way every single day."),
    ("joe", "Do you want to get some coffee before the next call?"),
    ("joe_high", "Sure, but we have to be back in ten minutes,"),
    ("joe_high", "because the client is always early."),
    ("joe", "Then let us go right now."),
]
SENTENCES = [
    "Okay, so I thought you knew about the meeting this morning.",
    "No, nobody told me anything about it.",
    "Well, there is not much difference between the two offices.",
    "At least you know, they all call me a stranger down here.",
    "That is funny, because I feel the same way every single day.",
    "Do you want to get some coffee before the next call?",
    "Sure, but we have to be back in ten minutes, because the client is always early.",
    "Then let us go right now.",
]


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def overlap(a: str, b: str) -> float:
    """Share of a's words found in b (order-free): ASR errors cost a word or two."""
    wa, wb = words(a), set(words(b))
    return sum(w in wb for w in wa) / max(len(wa), 1)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    media = tmp_path_factory.mktemp("dense")
    audio, turns = conversation(SCRIPT, lead_in_s=0.6, gap_s=(0.15, 0.4), seed=5)
    video = media / "dense.mp4"
    make_video(write_wav(media / "dense.wav", audio), video)
    ws = make_workspace(tmp_path_factory.mktemp("ws"), {NAME: video}, target_languages=["pt"])
    run = snakemake(ws, f"out/{NAME}.mkv")
    assert run.returncode == 0, run.stderr[-3000:]
    spoken = sum(len(words(t)) for _, t in SCRIPT)
    minutes = (turns[-1].end - turns[0].start) / 60
    print(f"\ndense dialogue: {spoken / minutes:.0f} words/min")
    assert spoken / minutes >= 160
    load = lambda *p: json.loads(ws.joinpath("work", NAME, *p).read_text())  # noqa: E731
    return ws, load("transcript.json"), load("pt", "translation.json"), load("pt", "fit.json")


def test_lines_are_whole_sentences_and_every_sentence_is_translated(dense):
    _, transcript, translation, _ = dense
    segments = transcript["segments"]
    share = sum(ends_sentence(s["text"]) for s in segments) / len(segments)
    print(f"\n{share:.0%} of {len(segments)} lines end a sentence:",
          [s["text"] for s in segments])
    assert share >= 0.9
    sources = [line["source"] for line in translation["lines"] if line["text"].strip()]
    for sentence in SENTENCES:
        best = max(sources, key=lambda source: overlap(sentence, source))
        assert overlap(sentence, best) >= 0.7, (sentence, sources)


def test_no_word_is_cut_and_lines_keep_within_speed_and_lead(dense):
    _, _, _, fit = dense
    lines = fit["lines"]
    trimmed = [line for line in lines if "trimmed" in line["flags"]]
    print(f"\n{fit['summary']}; voice faster: "
          f"{sum(bool(line.get('engine_speed')) for line in lines)}")
    assert len(trimmed) <= 0.05 * len(lines), trimmed
    assert all(line["cut"]["at_pause"] for line in trimmed)
    for line in lines:
        assert line["speed"] <= 1.25 + 1e-6 and line["lead_s"] <= 0.3 + 1e-6, line


def test_subtitles_are_readable_and_end_with_the_media(dense):
    ws, transcript, _, _ = dense
    for lang in ("en", "pt"):
        cues = pysubs2.load(str(ws / "out" / f"{NAME}.{lang}.srt"), encoding="utf-8")
        fastest = max(len(c.plaintext.replace("\n", " ")) / ((c.end - c.start) / 1000)
                      for c in cues)
        print(f"\n{lang}: {len(cues)} cues, fastest {fastest:.1f} characters/s")
        assert fastest <= 21.0 + 0.1
        assert max(c.end for c in cues) / 1000 <= transcript["duration_s"] + 1e-3
