"""The production settings, as docker-compose.yaml runs the web service with .env.example's
values, pass Django's deployment checks; with DEBUG off the admin's cookies are Secure whatever
the HTTPS settings say."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured

from core.settings.base import Env
from tests.conftest import REPO
from tests.deploy.test_env_documented import env_example

# Django's deployment warnings about the admin's cookies: not Secure.
COOKIE_WARNINGS = {"security.W012", "security.W016"}


def production_env(tmp_path: Path) -> dict[str, str]:
    """What the compose web service runs with: its env_file (.env, as copied from .env.example,
    plus the secrets an operator must add) and its own `environment`; nothing of this run."""
    web = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]["web"]
    assert web["env_file"] == ".env"
    env = {name: value for name, value, active in env_example() if active}
    env.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        POSTGRES_PASSWORD=secrets.token_urlsafe(16),
    )
    env.update({name: str(value) for name, value in web["environment"].items()})
    env.update(
        PATH=os.environ["PATH"],
        HOME=str(tmp_path),
        DATA_DIR=str(tmp_path / "data"),
        DJANGO_SETTINGS_MODULE="core.settings",
    )
    return env


def check_deploy(env: dict[str, str]) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=90,
    )
    return set(re.findall(r"\((\w+\.[WE]\d+)\)", result.stdout + result.stderr)), result


def test_check_deploy_reports_nothing(tmp_path: Path) -> None:
    issues, result = check_deploy(production_env(tmp_path))

    assert issues == set(), result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_the_https_settings_cookies_stay_secure(tmp_path: Path) -> None:
    """The check above is meaningful: drop .env.example's HTTPS lines and Django objects to the
    missing redirect and HSTS, but not to the cookies, which DEBUG off makes Secure anyway."""
    env = {k: v for k, v in production_env(tmp_path).items() if not k.startswith("SECURE_")}

    issues, result = check_deploy(env)

    assert {"security.W004", "security.W008"} <= issues, result.stdout + result.stderr
    assert not issues & COOKIE_WARNINGS, result.stdout + result.stderr


def test_with_debug_on_cookies_are_not_secure(tmp_path: Path) -> None:
    """Development on a plain-HTTP address other than loopback: DEBUG on, cookies not Secure."""
    issues, result = check_deploy({**production_env(tmp_path), "DEBUG": "true"})

    assert {"security.W018", *COOKIE_WARNINGS} <= issues, result.stdout + result.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("SECURE_SSL_REDIRECT", "ture"), ("METRICS_ENABLED", "flase"), ("DEBUG", "of"), ("LOG_LEVEL", "verbose"),
    # A negative limit of failed admin logins refused every login, the right password too.
    ("ADMIN_LOGIN_RATE_PER_MINUTE", "-1"), ("ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR", "-1"),
    ("ADMIN_LOGIN_FAILURES_PER_MINUTE", "-1"),
    # A negative rate refused every request of its scope (or every address's bad keys), 429 for ever.
    ("API_SUBMIT_RATE_PER_MINUTE", "-1"), ("API_READ_RATE_PER_MINUTE", "-1"), ("API_WRITE_RATE_PER_MINUTE", "-1"),
    ("API_SENSITIVE_RATE_PER_MINUTE", "-1"), ("API_AUTH_FAILURE_RATE_PER_MINUTE", "-1"),
    # Caps and quotas below zero refused every submission, or every delivery waited for ever.
    ("JOB_MAX_UNFINISHED_PER_CLIENT", "-1"), ("JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT", "-1"),
    ("WEBHOOK_MAX_IN_FLIGHT_PER_HOST", "-1"), ("API_MAX_BODY_BYTES", "0"), ("API_MAX_BATCH_SIZE", "0"),
    # Periods of 0: beat, a stream's heartbeat or the rate limit's sync in a loop.
    ("JOB_DISPATCH_SWEEP_SECONDS", "0"), ("WEBHOOK_DISPATCH_SECONDS", "0"), ("HOUSEKEEPING_INTERVAL_SECONDS", "0"),
    ("API_STREAM_HEARTBEAT_SECONDS", "0"), ("API_RATE_SYNC_SECONDS", "0"),
    # Timeouts of 0, model calls never tried or retried after a negative sleep, sessions over at once.
    ("WEBHOOK_TIMEOUT_SECONDS", "0"), ("CALLBACK_RESOLVE_SECONDS", "0"), ("OPENAI_TIMEOUT_SECONDS", "0"),
    ("OPENAI_MAX_ATTEMPTS", "0"), ("OPENAI_RETRY_BASE_SECONDS", "-1"), ("OPENAI_BREAKER_COOLDOWN_SECONDS", "0"),
    ("ADMIN_SESSION_SECONDS", "0"), ("IDEMPOTENCY_KEY_TTL_SECONDS", "0"), ("DB_CONNECT_TIMEOUT", "0"),
    # Past PostgreSQL's int milliseconds: every connection of the API's refused.
    ("API_DB_LOCK_TIMEOUT_SECONDS", "10000000"), ("POSTGRES_PORT", "70000"),
    # Past year 9999: every scheduled submission, or every secret's rotation, an OverflowError (500).
    ("JOB_MAX_SCHEDULE_AHEAD_SECONDS", "1000000000000"), ("WEBHOOK_SECRET_OVERLAP_SECONDS", "1000000000000"),
    # Taken from (or added to) now past year 1 or 9999: a retention of a million days ("for ever")
    # or a lost-message period of 10^12 s made every prune, or every sweep, an OverflowError.
    ("JOB_RETENTION_DAYS", "1000000"), ("WEBHOOK_EVENT_RETENTION_DAYS", "1000000"),
    ("JOB_RESULT_RETENTION_DAYS", "1000000"), ("JOB_DISPATCH_LOST_AFTER_SECONDS", "1000000000000"),
    ("CELERY_BROKER_VISIBILITY_TIMEOUT_SECONDS", "1000000000000"), ("HOUSEKEEPING_INTERVAL_SECONDS", "1000000000000"),
    ("WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS", "100000000000000"),
    # A word where a number goes: a ValueError naming the word, not the variable.
    ("API_READ_RATE_PER_MINUTE", "6k"), ("WEBHOOK_TIMEOUT_SECONDS", "nan"),
    # django-environ's float dropped what is not a digit, comma, dot or minus: 15.0, 10.0, 1.5.
    ("API_STREAM_HEARTBEAT_SECONDS", "15s"), ("WEBHOOK_TIMEOUT_SECONDS", "0x10"), ("DB_CHECK_TIMEOUT_SECONDS", "1,5"),
    # A staff session is to end: past a year refused (past year 9999, every sign-in's expiry overflowed).
    ("ADMIN_SESSION_SECONDS", str(365 * 24 * 3600 + 1)),
    # Past Python's socket timeouts: every request whose headers or body came in pieces an
    # OverflowError (a 500 and a traceback); past an hour refused.
    ("WEB_HEADER_READ_SECONDS", "1e10"), ("WEB_BODY_READ_SECONDS", "1e10"), ("WEB_HEADER_READ_SECONDS", "3601"),
    # A stream's write timeout at or below its heartbeat (15 s), documented as above it.
    ("API_STREAM_WRITE_TIMEOUT_SECONDS", "15"),
])
def test_a_misspelt_setting_stops_the_start_with_its_name(tmp_path: Path, name: str, value: str) -> None:
    """A switch that is neither on nor off, a log level logging has no name for, or a number
    outside what its setting can run with, is an error at start naming it: django-environ read
    any word but its six for "on" as off, so a typo turned the HTTPS redirect or the metrics off
    without a word, LOG_LEVEL's was a KeyError from deep in structlog, and a limit of -1 refused
    every login to the admin (or every request of its scope), a period of 0 spun."""
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env={**production_env(tmp_path), name: value},
        capture_output=True, text=True, check=False, timeout=90,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"django.core.exceptions.ImproperlyConfigured: {name} must be "
    ), result.stderr[-500:]


@pytest.mark.parametrize(("stream_env", "line"), [
    ({"API_STREAM_HEARTBEAT_SECONDS": "20", "API_STREAM_WRITE_TIMEOUT_SECONDS": "20"},
     "API_STREAM_WRITE_TIMEOUT_SECONDS must be 0 or > API_STREAM_HEARTBEAT_SECONDS (20.0), not 20.0."),
    # Only the heartbeat raised: the write timeout the operator never set is said to be its default.
    ({"API_STREAM_HEARTBEAT_SECONDS": "45"},
     ("API_STREAM_WRITE_TIMEOUT_SECONDS must be 0 or > API_STREAM_HEARTBEAT_SECONDS (45.0), not 30.0 "
      "(its default): set it above the heartbeat.")),
])
def test_a_stream_write_timeout_not_above_the_heartbeat_names_both(
    tmp_path: Path, stream_env: dict[str, str], line: str,
) -> None:
    env = production_env(tmp_path)
    del env["API_STREAM_WRITE_TIMEOUT_SECONDS"]
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, capture_output=True, text=True, check=False, timeout=90,
        env={**env, **stream_env},
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"django.core.exceptions.ImproperlyConfigured: {line}"
    ), result.stderr[-500:]


def test_zero_where_a_setting_documents_it_as_off_still_starts(tmp_path: Path) -> None:
    """The range checks above leave every documented "0: no limit", "0: never" and the like."""
    zeros = {name: "0" for name in [
        "API_SUBMIT_RATE_PER_MINUTE", "API_READ_RATE_PER_MINUTE", "API_WRITE_RATE_PER_MINUTE",
        "API_SENSITIVE_RATE_PER_MINUTE", "API_AUTH_FAILURE_RATE_PER_MINUTE", "ADMIN_LOGIN_RATE_PER_MINUTE",
        "ADMIN_ACTION_MAX_ROWS", "JOB_MAX_UNFINISHED_PER_CLIENT", "JOB_MAX_RUNNING_PER_CLIENT",
        "JOB_RESULT_QUOTA_BYTES_PER_CLIENT", "JOB_PAYLOAD_QUOTA_BYTES_PER_CLIENT", "API_KEY_CACHE_SECONDS",
        "API_STREAM_WRITE_TIMEOUT_SECONDS", "WEB_ACTIVE_REQUESTS", "WEB_BODY_READ_SECONDS",
        "WEB_HEADER_READ_SECONDS",
        "WEBHOOK_MAX_IN_FLIGHT_PER_HOST", "WEBHOOK_MAX_BACKLOG_PER_ENDPOINT", "OPENAI_MAX_OUTPUT_TOKENS",
        "OPENAI_BREAKER_FAILURES", "MODEL_TOKENS_PER_CLIENT_PER_DAY", "READYZ_CHECK_SECONDS", "DB_CONN_MAX_AGE",
        "API_DB_LOCK_TIMEOUT_SECONDS", "WORKER_SOFT_SHUTDOWN_SECONDS", "METRICS_PORT",
        "ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR", "ADMIN_LOGIN_FAILURES_PER_MINUTE", "ADMIN_CLIENT_DELETE_MAX_JOBS",
        "WEBHOOK_MAX_IN_FLIGHT_PER_CLIENT", "API_DB_STATEMENT_TIMEOUT_SECONDS",
    ]}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env={**production_env(tmp_path), **zeros},
        capture_output=True, text=True, check=False, timeout=90,
    )

    assert result.returncode == 0, result.stderr[-500:]


# Every word for on and off the settings take (django-environ's for on), in any case, and some
# they refuse.
SWITCH_WORDS = ["true", "on", "ok", "y", "yes", "1", "True", "YES", " On ", "false", "off", "no", "n", "0", "",
                "False", "ture", "2", "enabled"]


def test_the_scripts_read_a_switch_as_the_settings_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/dotenv.sh's switch_on, which decides whether scripts/web and scripts/worker make
    the metrics directory, against the settings' reader of METRICS_ENABLED."""
    script = f". {REPO}/scripts/dotenv.sh; " + 'for w in "$@"; do if switch_on "$w"; then echo on; else echo off; fi; done'
    result = subprocess.run(["sh", "-c", script, "sh", *SWITCH_WORDS], cwd=tmp_path,
                            env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, check=True, timeout=30)

    for word, script_says in zip(SWITCH_WORDS, result.stdout.split(), strict=True):
        monkeypatch.setenv("METRICS_ENABLED", word)
        try:
            settings_say = "on" if Env().bool("METRICS_ENABLED") else "off"
        except ImproperlyConfigured:
            settings_say = "refused"  # the settings stop the start: what the script does is moot
        assert settings_say in (script_says, "refused"), (word, settings_say, script_says)


def test_collectstatic_runs_as_the_image_build_runs_it(tmp_path: Path) -> None:
    """The Dockerfile's step: no database, no broker, a placeholder key, nothing else set."""
    static_root = tmp_path / "static"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SECRET_KEY": "build-only-placeholder-not-used-at-runtime",
        "DATA_DIR": str(tmp_path / "build"),
        "STATIC_ROOT": str(static_root),
    }

    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300,
    )

    assert result.returncode == 0, result.stderr
    # The API docs' assets, compressed for whitenoise.
    assert list(static_root.glob("drf_spectacular_sidecar/**/*.js.gz"))
    assert list(static_root.glob("admin/css/*.css"))
