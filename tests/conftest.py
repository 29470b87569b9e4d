"""Shared fixtures: real media generated once per test session (Piper speech + lavfi)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
TINY_EN = MODELS / "whisper-tiny.en"
BASE = MODELS / "whisper-base"

TEST_LINES = [
    "Good morning. The train to the city is leaving soon.",
    "Please remember your ticket, because the weather is cold today.",
]


def default_config() -> dict:
    """config/config.yaml with every schema default filled in, as the workflow sees it."""
    import yaml

    from dubflow.settings import validate_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate_config(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    return config


def default_asr(**changes) -> dict:
    return {**default_config()["asr"], **changes}


def pytest_sessionstart(session):
    """The models are built by `make setup`; build them here too so plain pytest works."""
    if not (BASE / "model.bin").is_file() or not (TINY_EN / "model.bin").is_file():
        subprocess.run(
            [sys.executable, str(ROOT / "tools" / "setup_models.py"), "--models-dir", str(MODELS)],
            check=True,
        )


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def speech_video(media_dir) -> tuple[Path, list]:
    """An H.264/AAC mp4 with two known English lines over a quiet noise bed."""
    from demo_media import make_demo

    video = media_dir / "speech.mp4"
    spoken = make_demo(video, TEST_LINES)
    return video, spoken


@pytest.fixture(scope="session")
def silent_video(media_dir) -> Path:
    """A video whose audio track is digital silence."""
    import numpy as np
    import soundfile as sf

    from demo_media import make_video

    wav = media_dir / "silence.wav"
    sf.write(wav, np.zeros(16000 * 4, dtype=np.float32), 16000)
    video = media_dir / "silence.mp4"
    make_video(wav, video, bed_level=0.0)
    return video


@pytest.fixture(scope="session")
def no_audio_video(media_dir) -> Path:
    import numpy as np
    import soundfile as sf

    from demo_media import make_video

    wav = media_dir / "length.wav"
    sf.write(wav, np.zeros(16000 * 2, dtype=np.float32), 16000)
    video = media_dir / "noaudio.mp4"
    make_video(wav, video, audio=False)
    return video


@pytest.fixture(scope="session")
def tiny_asr() -> dict:
    return default_asr(model=str(TINY_EN))
