"""A worker whose metrics port is taken runs on unscraped, and its log line says what that costs
the operator (core/metrics.py worker_serve)."""
from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from core import metrics


def test_a_worker_that_cannot_serve_its_metrics_says_which_alerts_go_blind(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a worker with metrics on, whose port another process holds
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    settings.METRICS_ADDRESS, settings.METRICS_PORT = "127.0.0.1", taken.getsockname()[1]
    monkeypatch.setattr(metrics, "enabled", lambda: True)
    monkeypatch.setattr(metrics, "registry", lambda extra=(): CollectorRegistry())
    try:
        # When it is ready and serves them
        metrics.worker_serve()
    finally:
        taken.close()

    # Then one ERROR line names the port, the alert that fires and the ones that go blind
    [line] = [record for record in caplog.records if record.getMessage().startswith("Cannot serve metrics")]
    assert line.levelno == logging.ERROR
    assert f"127.0.0.1:{settings.METRICS_PORT}" in line.getMessage()
    for alert in ("WorkerMetricsDown", "JobFailureRateHigh", "ModelProviderFailing", "BeatNotRunning"):
        assert alert in line.getMessage(), alert
