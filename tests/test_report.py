"""QA report: complete, escaped, self-contained, tolerant of missing pieces, light for a film."""

import base64
import json
import random
import re
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

import report
from dubflow import qa_data, qa_timeline
from dubflow.errors import InputError

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
WORDS = ["the", "train", "leaves", "at", "nine", "and", "we", "should", "not", "miss", "it",
         "because", "weather", "is", "cold", "today", "please", "remember", "your", "ticket",
         "good", "morning", "everyone"]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_inputs(folder: Path, n_lines: int = 6, langs: tuple = ("pt",),
                duration: float | None = 62.0, seed: int = 1) -> dict:
    """Files in the formats the other stages write, for n_lines spread over the video."""
    rng = random.Random(seed)
    span = duration or 62.0
    segments, turns, t = [], [], 0.5
    step = span / n_lines
    for i in range(n_lines):
        start, end = round(t, 3), round(t + step * rng.uniform(0.5, 0.9), 3)
        speaker = f"SPEAKER_0{i % 3 if i % 7 else 1}"
        text = sentence(rng, rng.randint(4, 14))
        words, w = [], start
        for token in text.split():
            words.append({"start": round(w, 3), "end": round(w + 0.2, 3), "word": " " + token,
                          "probability": 0.9})
            w += (end - start) / len(text.split())
        segments.append({"start": start, "end": end, "speaker": speaker, "text": text,
                         "words": words, "avg_logprob": -0.3, "no_speech_prob": 0.01,
                         "low_confidence": False})
        turns.append(f"SPEAKER video 1 {start:.3f} {end - start:.3f} <NA> <NA> {speaker} "
                     "<NA> <NA>\n")
        t += step
    transcript = {"language": "en", "language_probability": 0.98, "segments": segments}
    if duration is not None:
        transcript["duration_s"] = duration
    work = folder / "work" / "video"
    work.mkdir(parents=True)
    (work / "transcript.json").write_text(json.dumps(transcript), encoding="utf-8")
    (work / "speakers.rttm").write_text("".join(turns), encoding="utf-8")
    translations, fits = [], []
    for lang in langs:
        (work / lang).mkdir()
        lines, fit_lines = [], []
        for i, seg in enumerate(segments):
            line_id = f"{i + 1:04d}"
            text = f"[{lang}] " + sentence(rng, rng.randint(4, 14))
            lines.append({"id": line_id, "speaker": seg["speaker"], "start": seg["start"],
                          "end": seg["end"], "source": seg["text"], "text": text, "edited": False})
            slot = round(seg["end"] - seg["start"], 3)
            natural = round(slot * rng.uniform(0.6, 1.5), 3)
            borrowed = round(min(max(natural - slot, 0), 0.3), 3)
            speed = round(min(max(natural / (slot + borrowed), 1.0), 1.25), 3)
            trimmed = round(max(natural / speed - slot - borrowed, 0), 3)
            flags = [f for f, on in (("borrowed", borrowed > 0), ("sped_up", speed > 1),
                                     ("trimmed", trimmed > 0)) if on]
            fit_lines.append({"id": line_id, "start": seg["start"], "slot_s": slot,
                              "available_s": slot + 0.3, "natural_s": natural,
                              "borrowed_s": borrowed, "speed": speed, "trimmed_s": trimmed,
                              "played_s": round(min(natural / speed, slot + 0.3), 3),
                              "flags": flags, "text": text, "speaker": seg["speaker"],
                              "voice": f"{lang}-voice-{seg['speaker'][-1]}"})
        translation = {"source_language": "en", "target_language": lang, "backend": "argos",
                       "model": f"en-{lang}", "lines": lines}
        fit = {"lines": fit_lines,
               "summary": {"lines": len(fit_lines),
                           "borrowed": sum("borrowed" in f["flags"] for f in fit_lines),
                           "sped_up": sum("sped_up" in f["flags"] for f in fit_lines),
                           "trimmed": sum("trimmed" in f["flags"] for f in fit_lines),
                           "max_speed": max(f["speed"] for f in fit_lines)},
               "loudness": {"input_i": -23.4, "output_i": -16.2, "output_tp": -1.3,
                            "target_lufs": -16, "true_peak_db": -1}}
        (work / lang / "translation.json").write_text(json.dumps(translation), encoding="utf-8")
        (work / lang / "fit.json").write_text(json.dumps(fit), encoding="utf-8")
        translations.append(work / lang / "translation.json")
        fits.append(work / lang / "fit.json")
    bench = folder / "benchmarks" / "video"
    bench.mkdir(parents=True)
    for stage, seconds, rss in (("transcribe", 12.5, 812.3), ("diarize", 20.1, 1430.0),
                                *((f"mix.{lang}", 3.2, 240.0) for lang in langs)):
        row = f"{seconds}\t0:00:{int(seconds):02d}\t{rss}\t900\t700\t710\t1.0\t2.0\t85\t10.0\n"
        (bench / f"{stage}.tsv").write_text(BENCH_HEADER + row, encoding="utf-8")
    return {"name": "video", "transcript": work / "transcript.json", "rttm": work / "speakers.rttm",
            "translations": translations, "fits": fits, "benchmarks": sorted(bench.glob("*.tsv")),
            "output_html": folder / "out" / "video.report.html"}


def edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document), encoding="utf-8")


def build_page(inputs: dict) -> str:
    report.build(**inputs)
    return inputs["output_html"].read_text(encoding="utf-8")


@pytest.fixture
def inputs(tmp_path) -> dict:
    return make_inputs(tmp_path, langs=("pt", "de"))


def test_page_has_every_line_id_and_translation(inputs):
    page = build_page(inputs)
    for path in inputs["translations"]:
        for line in json.loads(path.read_text(encoding="utf-8"))["lines"]:
            assert f"<td>{line['id']}</td>" in page
            assert line["text"] in page
            assert line["source"] in page
    assert "pt — Portuguese" in page and "de — German" in page
    assert "en — English (p = 0.98)" in page
    assert not list(inputs["output_html"].parent.glob(".*partial*")), "temp file left behind"


def test_untrusted_text_is_escaped(inputs):
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    edit_json(inputs["transcript"], lambda d: d["segments"][0].update(text=evil))

    def poison(document):
        document["lines"][0].update(source=evil, text=evil, speaker="<b>boss</b>")

    edit_json(inputs["translations"][0], poison)
    page = build_page(inputs)
    assert "<script" not in page.lower()
    assert "<img src=x" not in page and "<b>boss" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page  # markupsafe's quote
    assert "&lt;b&gt;boss&lt;/b&gt;" in page


def test_plot_is_embedded_as_png(inputs):
    page = build_page(inputs)
    match = re.search(r'<img class="plot"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match, "timeline image missing"
    assert base64.b64decode(match.group(1)).startswith(b"\x89PNG\r\n\x1a\n")


def test_page_references_nothing_outside_itself(inputs):
    page = build_page(inputs)
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:|//|file:)', page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "url(" not in page and "@import" not in page
    assert "<link" not in page and "<script" not in page
    assert page.count("<style>") == 1 and page.count("</style>") == 1


def test_sped_up_trimmed_and_borrowed_lines_are_flagged(tmp_path):
    inputs = make_inputs(tmp_path, n_lines=3)

    def fit_figures(document):
        first, second, third = document["lines"]
        first.update(slot_s=2.0, natural_s=2.3, borrowed_s=0.3, speed=1.0, trimmed_s=0.0,
                     flags=["borrowed"])
        second.update(slot_s=2.0, natural_s=2.9, borrowed_s=0.3, speed=1.25, trimmed_s=0.0,
                      flags=["borrowed", "sped_up"])
        # no "flags" list at all: the figures alone must still raise the flags
        third.update(slot_s=2.0, natural_s=4.0, borrowed_s=0.0, speed=1.25, trimmed_s=1.2)
        del third["flags"]

    edit_json(inputs["fits"][0], fit_figures)
    page = build_page(inputs)
    rows = {m.group(2): m.group(0) for m in
            re.finditer(r"<tr( class=\"[^\"]*\")?><td>(\d{4})</td>.*?</tr>", page)}
    assert "borrowed" in rows["0001"] and "sped up" not in rows["0001"]
    assert rows["0001"].startswith("<tr><td>"), "borrowing alone is normal, not highlighted"
    assert rows["0002"].startswith('<tr class="sp">') and 'k-sp">sped up' in rows["0002"]
    assert "×1.25" in rows["0002"]
    assert rows["0003"].startswith('<tr class="tr">') and 'k-tr">trimmed' in rows["0003"]
    assert 'k-sp">sped up' in rows["0003"]
    assert 'class="n over">4.00 / 2.00' in rows["0003"]


def test_edited_and_low_confidence_lines_are_marked(inputs):
    edit_json(inputs["transcript"], lambda d: d["segments"][2].update(low_confidence=True,
                                                                      avg_logprob=-1.4))
    edit_json(inputs["translations"][0], lambda d: d["lines"][4].update(edited=True))
    page = build_page(inputs)
    pt = page[page.index('id="lang-pt"'):page.index('id="lang-de"')]
    row3 = re.search(r"<tr[^>]*><td>0003</td>.*?</tr>", pt).group(0)
    assert re.match(r'<tr class="[^"]*\blc\b', row3)
    assert "low conf" in row3 and "avg log-prob -1.40" in row3
    row5 = re.search(r"<tr[^>]*><td>0005</td>.*?</tr>", pt).group(0)
    assert 'k-ed">edited' in row5
    assert pt.count("low conf</b>") == 1 and pt.count('k-ed">edited') == 1


def test_missing_benchmarks_and_fit_keys_do_not_crash(tmp_path):
    inputs = make_inputs(tmp_path, duration=None)
    inputs["benchmarks"] = []
    # fit.json as a half-finished mix stage might write it: ids and little else
    half_written = [{"id": "0001"}, {"id": "0002", "speed": None},
                    {"id": "0003", "flags": ["trimmed"]}]
    edit_json(inputs["fits"][0], lambda d: (d.pop("summary"), d.pop("loudness"),
                                            d.update(lines=half_written)))
    page = build_page(inputs)
    assert "No benchmark files yet" in page
    assert "not measured: loudness and true peak" in page
    assert "estimated from the last speech" in page
    assert '<b class="k k-tr">trimmed</b>' in page
    assert "<td>0006</td>" in page


def test_missing_fit_file_and_no_languages(tmp_path):
    inputs = make_inputs(tmp_path)
    page = build_page({**inputs, "fits": []})
    assert "No fit.json for this language yet" in page and "<tr><td>0001</td>" in page
    page = build_page({**inputs, "translations": [], "fits": []})
    assert "No target languages" in page and 'src="data:image/png;base64,' in page


def test_lines_the_mix_did_not_voice_are_marked_and_not_plotted(tmp_path):
    inputs = make_inputs(tmp_path, n_lines=4)
    # line 0002 had empty text: the mix placed nothing for it and counted 3 lines
    edit_json(inputs["fits"][0], lambda d: (d["lines"].pop(1), d["summary"].update(lines=3)))
    lang = qa_data.load_languages(inputs["translations"], inputs["fits"], [])[0]
    assert [line.placed for line in lang.lines] == [True, False, True, True]
    assert lang.lines[1].flags == ["unvoiced"]
    _, bars = qa_timeline.timeline_bars([], [lang], qa_data.speaker_order([], [], [lang]))
    assert len(bars) == 3
    page = build_page(inputs)
    assert re.search(r'<tr class="uv"><td>0002</td>.*?not voiced</b></td></tr>', page)
    assert "4 lines · translated by argos / en-pt · 3 voiced" in page


def test_played_seconds_from_fit_json_place_the_line():
    line = qa_data.DubLine(id="1", speaker="A", start=10.0, end=12.0, source="", text="",
                          natural_s=3.0, speed=1.2, available_s=2.2)
    assert line.placed_end == pytest.approx(12.2)  # 3.0 / 1.2 = 2.5, cut to what is available
    line.played_s = 2.1
    assert line.placed_end == pytest.approx(12.1)


def test_without_diarization_lines_still_get_a_timeline_row(tmp_path):
    inputs = make_inputs(tmp_path)
    inputs["rttm"].write_text("", encoding="utf-8")
    edit_json(inputs["transcript"], lambda d: [s.pop("speaker") for s in d["segments"]])
    edit_json(inputs["translations"][0], lambda d: [line.pop("speaker") for line in d["lines"]])
    edit_json(inputs["fits"][0], lambda d: [line.pop("speaker") for line in d["lines"]])
    page = build_page(inputs)
    assert "not labelled (no diarization)" in page
    assert 'src="data:image/png;base64,' in page and "(unlabelled)" in page


def test_stage_timings_from_benchmark_files(inputs):
    bench = inputs["benchmarks"][0].parent
    not_measured = "\tNA" * 8 + "\n"
    (bench / "extract.tsv").write_text(BENCH_HEADER + "6.2\t0:00:06" + not_measured
                                       + "5.8\t0:00:05" + not_measured)
    (bench / "broken.tsv").write_text("not a benchmark\n")
    page = build_page({**inputs, "benchmarks": sorted(bench.glob("*.tsv"))})
    timings = page[page.index('id="timings"'):]
    stages = re.findall(r"<tr><td>([\w.]+)</td>", timings)
    assert stages == ["extract", "diarize", "transcribe", "mix.de", "mix.pt"]
    # mean of the repeats, RSS not measured, RTF against the 62 s video
    assert ('<td>extract</td><td class="n">6.0</td><td class="n">–</td>'
            '<td class="n">0.097</td>') in timings
    assert ('<td>transcribe</td><td class="n">12.5</td><td class="n">812</td>'
            '<td class="n">0.202</td>') in timings


@pytest.mark.parametrize("loudness, verdict", [
    ({"output_i": -16.6, "output_tp": -1.0, "target_lufs": -16, "true_peak_db": -1}, "pass"),
    ({"output_i": -17.5, "output_tp": -2.0, "target_lufs": -16, "true_peak_db": -1}, "fail"),
    ({"output_i": -16.0, "output_tp": -0.4, "target_lufs": -16, "true_peak_db": -1}, "fail"),
    ({"output_i": -16.0, "target_lufs": -16}, "na"),
    ({}, "na"),
])
def test_loudness_verdict(loudness, verdict):
    assert qa_data.loudness_verdict(loudness)[0] == verdict


def test_bad_input_names_file_and_stage(tmp_path):
    inputs = make_inputs(tmp_path)
    inputs["transcript"].write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"transcript\.json cannot be read as JSON.*transcribe stage"):
        report.build(**inputs)
    assert not inputs["output_html"].exists()
    inputs = make_inputs(tmp_path / "again")
    inputs["fits"][0].unlink()
    with pytest.raises(InputError, match=r"fit\.json is missing.*mix stage"):
        report.build(**inputs)


def test_clock_and_panels():
    assert qa_data.clock(62.04) == "1:02.0"
    assert qa_data.clock(7322.5) == "2:02:02.5"
    assert qa_data.clock(59.96) == "1:00.0"
    assert qa_data.clock(3600, 0) == "1:00:00"
    assert qa_timeline.panel_length(62.0) == 62.0
    assert qa_timeline.panel_length(7200.0) == 600.0
    assert 7200.0 / qa_timeline.panel_length(7200.0) <= qa_timeline.MAX_PANELS


def test_two_hour_film_builds_fast_and_light(tmp_path):
    from dubflow import qa_clips

    inputs = make_inputs(tmp_path, n_lines=1500, langs=("pt", "de"), duration=7200.0)
    # the clips folder's manifest (no audio needed): a film's page has 6,000 players
    _, manifest = qa_clips.plan(qa_data.load_languages(inputs["translations"], inputs["fits"], []))
    clips = tmp_path / "out" / "video.report"
    clips.mkdir(parents=True)
    (clips / "clips.json").write_text(json.dumps(manifest), encoding="utf-8")
    started = time.perf_counter()
    report.build(**inputs, clips=clips)
    elapsed = time.perf_counter() - started
    size = inputs["output_html"].stat().st_size
    assert elapsed < 10, f"build took {elapsed:.1f} s"
    assert size < 3_000_000, f"page is {size / 1e6:.2f} MB"
    page = inputs["output_html"].read_text(encoding="utf-8")
    assert "<td>1500</td>" in page and "panels of 10:00" in page
    players = re.findall(r'src="video.report/([\w.-]+)"', page)
    assert len(players) == 6000 and len(set(players)) == 4500  # languages share source clips


# --- the real workflow: the page and its clips, built from generated speech ------------

QA_NAME = "qa 100% #1"  # '%' would be a pattern in ffmpeg's segment names, '#' a URL fragment
EVIL_LINE = "<script>alert(1)</script> Bom dia & boa viagem"


@pytest.fixture(scope="module")
def qa_built(tmp_path_factory, speech_video):
    """One fast build (espeak, no separation) with a reviewer's edit that holds markup."""
    from test_workflow import make_workspace, snakemake

    video, _ = speech_video
    ws = make_workspace(tmp_path_factory.mktemp("qa"), {QA_NAME: video}, fast=True)
    (ws / "edits").mkdir()
    (ws / "edits" / f"{QA_NAME}.pt.tsv").write_text(f"id\ttext\n0001\t{EVIL_LINE}\n")
    run = snakemake(ws, f"out/{QA_NAME}.report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    return ws


def decoded(clip: Path, tmp: Path) -> tuple[np.ndarray, int]:
    """A clip decoded alone, as a browser would, to 16 kHz mono."""
    from dubflow.ffmpeg_safe import file_arg, run_ffmpeg

    wav = tmp / (clip.stem + ".wav")
    run_ffmpeg(["-v", "error", "-i", file_arg(clip), "-ac", "1", "-ar", "16000", file_arg(wav)],
               stage="test", path=clip)
    audio, rate = sf.read(str(wav), dtype="float32")
    return audio, rate


def envelope(audio: np.ndarray, rate: int, hop_s: float = 0.01) -> np.ndarray:
    hop = int(rate * hop_s)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    return np.sqrt((frames ** 2).mean(axis=1) + 1e-10)


def assert_aligned(clip: Path, original: Path, start: float, end: float, tmp: Path) -> None:
    """The clip plays [start, end] of the original: same length, and its loudness
    envelope matches the original's there, at the lag the clip's lead-in silence explains."""
    from dubflow import qa_clips

    audio, rate = decoded(clip, tmp)
    expected = end - start + qa_clips.GAP_S
    assert abs(len(audio) / rate - expected) < 0.05, (clip.name, len(audio) / rate, expected)
    with sf.SoundFile(str(original)) as handle:
        handle.seek(round(start * handle.samplerate))
        source = handle.read(round((end - start) * handle.samplerate), dtype="float32",
                             always_2d=True).mean(axis=1)
        source_rate = handle.samplerate
    a, b = envelope(audio, rate), envelope(source, source_rate)
    lead = round(qa_clips.GAP_S / 2 / 0.01)
    scores = {lag: np.corrcoef(a[lead + lag: lead + lag + len(b) - 10], b[:len(b) - 10])[0, 1]
              for lag in range(-3, 4)}
    best = max(scores, key=scores.get)
    assert abs(best) <= 3 and scores[best] > 0.8, (clip.name, scores)


def test_every_line_plays_its_source_and_dub_clip(qa_built, tmp_path):
    from dubflow import qa_clips, qa_data

    ws = qa_built
    work = ws / "work" / QA_NAME
    folder = ws / "out" / f"{QA_NAME}.report"
    manifest = json.loads((folder / "clips.json").read_text())
    languages = qa_data.load_languages([work / "pt" / "translation.json"],
                                       [work / "pt" / "fit.json"], [])
    cuts, planned = qa_clips.plan(languages)
    assert manifest == planned
    lines = languages[0].lines
    assert len(lines) == 2 and all(line.placed for line in lines)
    assert set(manifest["pt"]) == {line.key for line in lines}
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        ["clips.json"] + [c.file for clips in cuts.values() for c in clips])
    for key, audio in (("source", work / "audio.wav"), ("pt", work / "pt" / "dub.wav")):
        for clip in cuts[key]:
            assert (folder / clip.file).stat().st_size < 40_000, clip
            assert_aligned(folder / clip.file, audio, clip.start, clip.end, tmp_path)
    # each clip starts just before its line, where the source / the mix plays it
    first = lines[0]
    source_clip, dub_clip = cuts["source"][0], cuts["pt"][0]
    assert source_clip.start == pytest.approx(first.start - qa_clips.PAD_BEFORE_S, abs=1e-3)
    assert dub_clip.start == pytest.approx(first.played_start - qa_clips.PAD_BEFORE_S, abs=1e-3)

    page = (ws / "out" / f"{QA_NAME}.report.html").read_text(encoding="utf-8")
    sources = re.findall(r'<audio controls [^>]*src="([^"]+)"', page)
    assert len(sources) == 4  # two lines, a source and a dub clip each
    for src in sources:
        assert not re.match(r"[a-z]+:|/", src), src  # relative: works from out/ as a file
        assert (ws / "out" / unquote(src)).is_file(), src


def test_the_built_page_escapes_an_edited_line(qa_built):
    page = (qa_built / "out" / f"{QA_NAME}.report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Bom dia &amp; boa viagem" in page


def test_the_timing_table_shows_every_declared_stage(qa_built):
    page = (qa_built / "out" / f"{QA_NAME}.report.html").read_text(encoding="utf-8")
    timings = page[page.index('id="timings"'):]
    stages = re.findall(r"<tr><td>([\w.]+)</td>", timings)
    assert stages == ["extract", "diarize", "speaker_ids", "transcribe", "translate.pt",
                      "subtitles.en", "subtitles.pt", "synthesize.pt", "mix.pt", "mux",
                      "report_clips"]


def test_only_clips_whose_audio_changed_are_encoded_again(tmp_path):
    """The clip cache: a second cut of the same audio encodes nothing and gives the same
    files; after one stretch of the audio changes, only its clip is encoded again."""
    from dubflow import qa_clips

    rate = 48000
    t = np.arange(12 * rate) / rate
    pitch = 220 + 40 * np.floor(t / 2)  # every clip its own tone (equal audio shares a key)
    audio = (0.2 * np.sin(2 * np.pi * pitch * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)).astype(
        np.float32)
    wav = tmp_path / "dub.wav"
    sf.write(str(wav), audio, rate, subtype="PCM_16")
    clips = [qa_clips.Clip(f"pt-{i + 1:05d}.webm", 2.0 * i, 2.0 * i + 1.5) for i in range(5)]
    cache = tmp_path / "cache"
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    for folder in (first, second, third):
        folder.mkdir()
    assert qa_clips.cut(wav, clips, first, "24k", cache=cache) == 5
    assert qa_clips.cut(wav, clips, second, "24k", cache=cache) == 0
    for clip in clips:
        assert (first / clip.file).read_bytes() == (second / clip.file).read_bytes()
    audio[int(4.2 * rate):int(4.8 * rate)] *= 0.5  # inside the third clip only
    sf.write(str(wav), audio, rate, subtype="PCM_16")
    assert qa_clips.cut(wav, clips, third, "24k", cache=cache) == 1
    changed = [c.file for c in clips
               if (third / c.file).read_bytes() != (first / c.file).read_bytes()]
    assert changed == ["pt-00003.webm"]
    assert_aligned(third / "pt-00003.webm", wav, 4.0, 5.5, tmp_path)
    assert not list(third.glob(".*"))  # no scratch left behind
