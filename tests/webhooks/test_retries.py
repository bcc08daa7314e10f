"""The retry schedule (with jitter) and Retry-After parsing."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from core.retry_after import retry_after_seconds
from webhooks.retries import JITTER_FRACTION, retry_delay_seconds

DEFAULT = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]


@pytest.mark.parametrize("attempts_made", range(len(DEFAULT)))
def test_each_delay_is_the_scheduled_one_within_the_jitter(attempts_made: int) -> None:
    rng = random.Random(attempts_made)
    base = DEFAULT[attempts_made]
    delays = [retry_delay_seconds(attempts_made=attempts_made, schedule=DEFAULT, rng=rng) for _ in range(50)]

    assert all(d is not None and base * (1 - JITTER_FRACTION) <= d <= base * (1 + JITTER_FRACTION) for d in delays)
    if base:
        assert len(set(delays)) > 1  # jittered, not all the same


def test_the_schedule_ends_after_its_last_entry() -> None:
    assert retry_delay_seconds(attempts_made=len(DEFAULT), schedule=DEFAULT) is None
    assert retry_delay_seconds(attempts_made=3, schedule=[0, 1, 1]) is None


def test_the_documented_default_schedule_is_the_setting_default(tmp_path: Path) -> None:
    import subprocess
    import sys

    # A fresh interpreter without the test environment's override (on embedded defaults, which
    # make their data directory).
    code = "from django.conf import settings; import django; django.setup(); print(settings.WEBHOOK_RETRY_SCHEDULE)"
    env = {"DJANGO_SETTINGS_MODULE": "core.settings", "PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(DEFAULT)


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 30 ", 30.0),
        ("999999", 3600.0),  # bounded
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),  # in the past: now
        ("", None),
        (None, None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, now=NOW, max_seconds=3600) == expected
