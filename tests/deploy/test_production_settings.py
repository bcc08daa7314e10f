"""The production settings, as .env.example configures them, pass Django's deployment checks."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.deploy.test_env_documented import env_example


def production_env(tmp_path: Path) -> dict[str, str]:
    """Only what .env.example sets (plus the secrets an operator must add): nothing of this run."""
    env = {name: value for name, value, active in env_example() if active}
    env.update(
        PATH=os.environ["PATH"],
        HOME=str(tmp_path),
        SECRET_KEY=secrets.token_urlsafe(50),
        POSTGRES_PASSWORD=secrets.token_urlsafe(16),
        DATA_DIR=str(tmp_path / "data"),
        DJANGO_SETTINGS_MODULE="core.settings",
    )
    return env


def test_check_deploy_reports_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=production_env(tmp_path), capture_output=True, text=True, check=False, timeout=90,
    )

    issues = re.findall(r"\((\w+\.[WE]\d+)\)", result.stdout + result.stderr)
    assert issues == [], result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_flags_a_deployment_without_the_https_settings(tmp_path: Path) -> None:
    """The check above is meaningful: drop .env.example's HTTPS lines and Django objects."""
    env = {k: v for k, v in production_env(tmp_path).items() if not k.startswith("SECURE_")}

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=90,
    )

    issues = set(re.findall(r"\((\w+\.[WE]\d+)\)", result.stdout + result.stderr))
    assert {"security.W004", "security.W008", "security.W012", "security.W016"} <= issues


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
