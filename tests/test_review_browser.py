"""The review app end to end: a video built here, the app started as a user starts it, and
real headless Chromium (Debian's chromium + chromium-driver, through Selenium) playing a
clip, editing a line, hearing the preview and applying it.

Screenshots at 1280 px go to the folder named by REVIEW_SCREENSHOTS (else tmp_path).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from conftest import ROOT
from conversation import LINES, conversation, round_robin, write_wav
from demo_media import make_video
from dubflow.ffmpeg_safe import file_arg, run_ffmpeg
from test_workflow import make_workspace, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.model]
NAME = "talk"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Eight lines of two speakers, dubbed into Portuguese (espeak-ng, no separation)."""
    media = tmp_path_factory.mktemp("talk")
    audio, _ = conversation(round_robin(["joe", "espeak_f3"], LINES[:8]), seed=3)
    video = media / "talk.mp4"
    make_video(write_wav(media / "talk.wav", audio), video)
    # Kokoro is not the configured voice but may be chosen in the page (tests below do)
    ws = make_workspace(tmp_path_factory.mktemp("ws"), {NAME: video}, fast=True,
                        tts={"kokoro_model": str(ROOT / "models" / "kokoro")})
    run = snakemake(ws, f"out/{NAME}.mkv", f"out/{NAME}.report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    return ws


@pytest.fixture(scope="module")
def app(workspace):
    """tools/review.py as a user runs it; yields (base URL, token)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tools" / "review.py"), str(workspace), "--name", NAME,
         "--configfile", "config.yaml", "--snakefile", str(ROOT / "workflow" / "Snakefile")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", first)
        assert found, first + proc.stdout.read(2000)
        yield found.group(1), found.group(2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                     "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def post(base, token, path, payload, **headers):
    return requests.post(base + path, json=payload, timeout=60,
                         headers={"X-Review-Token": token, **headers})


def test_requests_without_the_token_naming_paths_or_bad_lines_are_refused(app, workspace):
    base, token = app
    assert requests.get(f"{base}/?token={token}", timeout=30).status_code == 200
    refused = {
        "no token": requests.get(f"{base}/", timeout=30),
        "wrong token": requests.get(f"{base}/?token=x{token}", timeout=30),
        "no token, POST": requests.post(f"{base}/api/apply", json={}, timeout=30),
        "token in query, POST": requests.post(f"{base}/api/apply?token={token}", json={},
                                              timeout=30),
        "cross-site": requests.get(f"{base}/?token={token}", timeout=30,
                                   headers={"Sec-Fetch-Site": "cross-site"}),
        "other origin": post(base, token, "/api/apply", {}, Origin="http://evil.example"),
        "path": requests.get(f"{base}/clip/pt/..%2F..%2F..%2Fetc%2Fpasswd/dub?token={token}",
                             timeout=30),
        "file name": requests.get(f"{base}/clip/pt/%2Fetc%2Fpasswd/dub?token={token}",
                                  timeout=30),
        "unknown language": requests.get(f"{base}/clip/xx/0001/dub?token={token}", timeout=30),
        "unknown line": post(base, token, "/api/preview",
                             {"lang": "pt", "id": "9999", "text": "Olá."}),
        "empty text": post(base, token, "/api/preview", {"lang": "pt", "id": "0001", "text": " "}),
        "too long": post(base, token, "/api/apply",
                         {"lang": "pt", "edits": {"0001": "palavra " * 60}}),
        "nothing changed": post(base, token, "/api/apply", {"lang": "pt", "edits": {}}),
        "bad voice": post(base, token, "/api/apply",
                          {"lang": "pt", "voices": {"SPEAKER_00": "nosuch:voice"}}),
    }
    for what, response in refused.items():
        assert response.status_code in (400, 403, 404), (what, response.status_code)
        sentence = response.json()["error"]
        assert sentence.endswith(".") and "\n" not in sentence, (what, sentence)
    assert not (workspace / "edits").exists()  # nothing was written


def test_a_newer_text_for_a_line_stops_the_preview_of_the_older_one(app):
    """The page asks for a preview whenever the reviewer pauses typing. A pause mid-sentence
    starts one nobody will hear; the finished sentence must not wait for it."""
    from concurrent.futures import ThreadPoolExecutor

    base, token = app
    voice = "kokoro:jm_kumo"  # a voice that takes seconds per line
    # another line first: the voice is loaded and the app is idle (a preview waiting for
    # the app's lock is refused as superseded without being stopped)
    warm = post(base, token, "/api/preview",
                {"lang": "pt", "id": "0001", "voice": voice, "text": "Bom dia a todos."})
    assert warm.status_code == 200, warm.text
    older = {"lang": "pt", "id": "0003", "voice": voice,
             "text": "Eu olhei para os números na noite passada e eles não batem"}
    newer = {**older, "text": "Eu olhei os números ontem à noite e eles não batem."}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, base, token, "/api/preview", older)
        time.sleep(0.5)  # the older text is being voiced: about 2 s of Kokoro
        second = post(base, token, "/api/preview", newer)
        first = first.result()
    assert second.status_code == 200, second.text
    assert first.status_code == 409, (first.status_code, first.text[:200])
    assert first.json()["error"] == ("Line 0003 was edited again before its preview was "
                                     "ready; preview the newer text.")
    # the voice is unharmed: the older text, asked for again, is made and sounds different
    again = post(base, token, "/api/preview", older)
    assert again.status_code == 200, again.text
    assert again.content != second.content
    audio, _ = sf.read(io.BytesIO(again.content))
    assert np.sqrt(np.mean(audio ** 2)) > 0.01


def page_audio(driver, line_id: str) -> tuple[np.ndarray, int]:
    """The preview the page played, read back from its blob."""
    data = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const reader = new FileReader();
        reader.onload = () => done(reader.result.split(',')[1]);
        reader.readAsDataURL(window.reviewState.previews[arguments[0]].blob);
    """, line_id)
    return sf.read(io.BytesIO(base64.b64decode(data)), dtype="float32")


def dub_track(mkv: Path, dest: Path) -> tuple[np.ndarray, int]:
    """The mkv's first audio track (the dub), decoded, mono."""
    run_ffmpeg(["-i", file_arg(mkv), "-map", "0:a:0", "-ac", "1", "-c:a", "pcm_f32le",
                file_arg(dest)], stage="test", path=mkv)
    return sf.read(str(dest), dtype="float32")


def changed_seconds(old: np.ndarray, new: np.ndarray, rate: int) -> list[float]:
    """Starts of the 0.25 s windows where the new dub differs from the old one, after the
    one loudness gain the mix applies to the whole track is taken out."""
    size = min(len(old), len(new))
    old, new = old[:size].astype(np.float64), new[:size].astype(np.float64)
    gain = float(np.dot(old, new) / max(np.dot(old, old), 1e-12))
    hop = rate // 4
    changed = []
    for first in range(0, size - hop, hop):
        a, b = old[first:first + hop] * gain, new[first:first + hop]
        level = max(np.sqrt(np.mean(a ** 2)), np.sqrt(np.mean(b ** 2)), 1e-4)
        if np.sqrt(np.mean((a - b) ** 2)) > 0.15 * level:
            changed.append(first / rate)
    return changed


def wait_for(condition, timeout: float, what: str):
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except WebDriverException:  # the page is reloading
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_play_edit_preview_and_apply_in_the_browser(app, browser, workspace, tmp_path):
    from selenium.webdriver.common.by import By

    base, token = app
    shots = Path(os.environ.get("REVIEW_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    translation = json.loads((workspace / "work" / NAME / "pt" / "translation.json").read_text())
    lines = translation["lines"]
    # the longest line in the middle: its neighbours show that nothing else moved
    line = max(lines[2:-2], key=lambda x: x["end"] - x["start"])
    line_id, words = line["id"], line["text"].rstrip(".!?").split()
    new_text = " ".join(reversed(words)) + "."
    old_mkv = tmp_path / "old.mkv"
    shutil.copy(workspace / "out" / f"{NAME}.mkv", old_mkv)

    browser.get(f"{base}/?token={token}")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{line_id}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.source").text == line["source"]
    wait_for(lambda: browser.execute_script(
        "return document.getElementById('video').readyState >= 1"), 120, "the video proxy")
    browser.save_screenshot(str(shots / "review-page.png"))

    # play the line's dub clip
    row.find_element(By.CSS_SELECTOR, 'button.play[data-kind="dub"]').click()
    wait_for(lambda: browser.execute_script(
        "const p = window.reviewState.player; return p.currentTime > 0.2 || p.ended;"),
        20, "the dub clip to play")
    old_clip, rate = sf.read(io.BytesIO(requests.get(
        f"{base}/clip/pt/{line_id}/dub?token={token}", timeout=30).content), dtype="float32")

    # clicking a row seeks the video to the line
    row.find_element(By.CSS_SELECTOR, "td.source").click()
    assert abs(browser.execute_script("return document.getElementById('video').currentTime")
               - float(row.get_attribute("data-start"))) < 0.3

    # edit, then hear the preview
    area = row.find_element(By.CSS_SELECTOR, "textarea")
    area.clear()
    area.send_keys(new_text)
    assert browser.find_element(By.ID, "pending").text == "1 line changed"
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
    row.find_element(By.CSS_SELECTOR, "button.preview").click()
    preview = wait_for(lambda: browser.execute_script(
        "const p = window.reviewState.previews[arguments[0]];"
        "return p && {seconds: p.seconds, info: p.info};", line_id), 60, "the preview")
    wait_for(lambda: browser.execute_script(
        "return window.reviewState.played.slice(-1)[0]") == f"preview:{line_id}", 10,
        "the preview to play")
    heard, heard_rate = page_audio(browser, line_id)
    assert heard_rate == rate and len(heard) > rate * 0.5
    size = min(len(heard), len(old_clip))
    assert len(heard) != len(old_clip) or not np.allclose(heard[:size], old_clip[:size],
                                                          atol=1e-3)
    print(f"preview latency in the page: {preview['seconds']} s; fit: {preview['info']}")
    browser.save_screenshot(str(shots / "review-edited.png"))

    # apply: the rebuild runs in the background, one at a time
    started = time.monotonic()
    browser.find_element(By.ID, "apply").click()
    wait_for(lambda: browser.execute_script(
        "return !document.getElementById('status').hidden"), 20, "the progress")
    second = post(base, token, "/api/apply", {"lang": "pt", "edits": {lines[0]["id"]: "Oi."}})
    assert second.status_code == 409 and "already running" in second.json()["error"]
    browser.save_screenshot(str(shots / "review-rebuilding.png"))

    def rebuilt() -> bool:
        status = requests.get(f"{base}/api/status?token={token}", timeout=30).json()
        assert status["state"] != "failed", status["error"] + "\n" + status["log"]
        return browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{line_id}"] textarea'
                                    ).get_attribute("data-original") == new_text

    wait_for(rebuilt, 600, "the rebuild and the page to reload")
    print(f"apply: rebuilt and reloaded in {time.monotonic() - started:.1f} s")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{line_id}"]')
    assert row.find_elements(By.CSS_SELECTOR, ".badge.edited")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
    browser.save_screenshot(str(shots / "review-applied.png"))

    edits = (workspace / "edits" / f"{NAME}.pt.tsv").read_text(encoding="utf-8").splitlines()
    assert edits == ["id\ttext\tsource", f"{line_id}\t{new_text}\t{line['source']}"]
    log = (workspace / "logs" / NAME / "synthesize.pt.log").read_text()
    counts = re.findall(r"(\d+) lines: (\d+) synthesized, (\d+) from cache", log)[-1]
    assert counts[1] == "1" and int(counts[2]) == int(counts[0]) - 1, counts

    old, rate = dub_track(old_mkv, tmp_path / "old.wav")
    new, _ = dub_track(workspace / "out" / f"{NAME}.mkv", tmp_path / "new.wav")
    fit = {row["id"]: row for row in
           json.loads((workspace / "work" / NAME / "pt" / "fit.json").read_text())["lines"]}
    changed = changed_seconds(old, new, rate)
    start = min(line["start"], fit[line_id]["start"]) - 0.5
    end = max(line["end"], fit[line_id]["start"] + fit[line_id]["played_s"]) + 0.5
    assert changed and all(start <= t <= end for t in changed), (changed, start, end)


def test_a_voice_choice_revoices_that_speaker_only(app, workspace):
    """Through the app's Apply: edits/<name>.voices.yaml is an input of synthesize, and
    only the re-voiced speaker's lines are synthesized again."""
    base, token = app
    lines = json.loads((workspace / "work" / NAME / "pt" / "tts" / "lines.json").read_text())
    speaker = lines[0]["speaker"]
    old = lines[0]["voice"]
    new = "espeak:pt-br+m8" if old != "espeak:pt-br+m8" else "espeak:pt-br+f1"
    response = post(base, token, "/api/apply", {"lang": "pt", "voices": {speaker: new}})
    assert response.status_code == 202, response.text
    status = wait_for(lambda: (lambda s: s if s["state"] in ("done", "failed") else None)(
        requests.get(f"{base}/api/status?token={token}", timeout=30).json()), 600, "the rebuild")
    assert status["state"] == "done", status["error"] + "\n" + status["log"]
    voices_file = workspace / "edits" / f"{NAME}.voices.yaml"
    assert f"{speaker}: {new}" in voices_file.read_text()
    after = json.loads((workspace / "work" / NAME / "pt" / "tts" / "lines.json").read_text())
    assert {x["voice"] for x in after if x["speaker"] == speaker} == {new}
    assert [x["voice"] for x in after if x["speaker"] != speaker] == [
        x["voice"] for x in lines if x["speaker"] != speaker]
    log = (workspace / "logs" / NAME / "synthesize.pt.log").read_text()
    counts = re.findall(r"(\d+) lines: (\d+) synthesized, (\d+) from cache", log)[-1]
    assert int(counts[1]) == sum(x["speaker"] == speaker and bool(x["text"]) for x in after)
