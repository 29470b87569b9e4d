"""Progress lines: share done and time left, rate-limited so long jobs keep short logs."""

import logging

from dubflow.progress import Progress


def test_progress_logs_share_and_time_left_at_most_every_interval(caplog, monkeypatch):
    clock = iter([0.0, 5.0, 20.0, 25.0, 40.0])
    monkeypatch.setattr("dubflow.progress.time.monotonic", lambda: next(clock))
    progress = Progress(600, "transcribed", " s of audio", every_s=15,
                        logger=logging.getLogger("t"))
    with caplog.at_level(logging.INFO):
        for done in (50, 200, 250, 400):  # at t = 5, 20, 25, 40 s
            progress.update(done)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["transcribed: 33% (200 of 600 s of audio), about 40 s left",
                     "transcribed: 67% (400 of 600 s of audio), about 20 s left"]
