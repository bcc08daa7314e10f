"""The scripts run by hand take their own variables (the ones they and gunicorn.conf.py read
before the settings load) from .env, as the settings do, the environment winning over the file
(scripts/dotenv.sh); a .env that cannot be read stops them, the health check and the settings
with the reason (core/dotenv.py). On embedded defaults, in a checkout of their own (no .env is
written into the repository)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.dotenv import read_dotenv
from tests.conftest import REPO, free_port, stop_process, wait_until_up
from tests.core.test_make_run import SERVER_VARIABLES, checkout_with_dotenv
from tests.deploy.test_env_documented import env_example

pytestmark = pytest.mark.timeout(120)

# What these tests put in .env: the environment they run the scripts in sets only what it says.
DOTENV_VARIABLES = ("PORT", "WEB_CONCURRENCY", "WORKER_NAME", "WORKER_CONCURRENCY", "QUEUES", "LOG_LEVEL",
                    "BEAT_SCHEDULE_FILE", "ALLOWED_HOSTS", "HOST")


def environment_by_hand(checkout: Path, **environment: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES + DOTENV_VARIABLES}
    env.update({"DATA_DIR": str(checkout.parent / "data"), "VIRTUAL_ENV": sys.prefix, **environment})
    return env


def run_by_hand(checkout: Path, script: str, log_path: Path, **environment: str) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(checkout / "scripts" / script)], cwd=checkout,
                                env=environment_by_hand(checkout, **environment), stdout=log,
                                stderr=subprocess.STDOUT)


def check_by_hand(checkout: Path, check: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """scripts/healthcheck as an operator runs it: by its path, with whichever python3 the PATH
    has, from wherever the shell is."""
    return subprocess.run([str(checkout / "scripts" / "healthcheck"), check], cwd=checkout.parent,
                          env=environment_by_hand(checkout, **environment), capture_output=True, text=True,
                          check=False, timeout=60)


def wait_for_line(pattern: str, process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + 60
    while not (match := re.search(pattern, log_path.read_text(), re.MULTILINE)):
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    return match.group(0)


def test_web_serves_on_the_port_dotenv_names_and_the_health_check_checks_it(tmp_path: Path) -> None:
    # Given a checkout whose .env names the API's port and host names, and a shell that names none
    port = free_port()
    checkout = checkout_with_dotenv(
        tmp_path, f"PORT={port}\nWEB_CONCURRENCY=1\nALLOWED_HOSTS=.jobs.example.com,127.0.0.1\n")
    log_path = tmp_path / "web.log"

    # When scripts/web is run there by hand
    web = run_by_hand(checkout, "web", log_path)

    # Then gunicorn listens on .env's port (it read the environment alone, and took 8000)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", web, log_path)
        # And the health check run there by hand finds it healthy, on .env's port with a host
        # name of .env's (it asked port 8000, as localhost, which Django refuses)
        healthy = check_by_hand(checkout, "web")
        # But not where the shell names another port: the environment wins over .env
        elsewhere = check_by_hand(checkout, "web", PORT=str(free_port()))
    finally:
        stop_process(web)
    assert healthy.returncode == 0, healthy.stderr
    assert elsewhere.returncode == 1 and "web unhealthy" in elsewhere.stderr, elsewhere.stderr


def test_worker_takes_its_name_from_dotenv_and_its_processes_from_the_environment(tmp_path: Path) -> None:
    # Given a .env naming the worker and its processes, and a shell naming its processes too
    checkout = checkout_with_dotenv(tmp_path, "WORKER_NAME=named-in-dotenv\nWORKER_CONCURRENCY=3\n")
    log_path = tmp_path / "worker.log"

    # When scripts/worker is run there by hand
    worker = run_by_hand(checkout, "worker", log_path, WORKER_CONCURRENCY="1")

    # Then its banner shows .env's name and the shell's process count
    try:
        concurrency = wait_for_line(r"concurrency: .*$", worker, log_path)
        assert re.search(r"^ -+ named-in-dotenv@", log_path.read_text(), re.MULTILINE), log_path.read_text()
        assert concurrency == "concurrency: 1 (prefork)"
    finally:
        stop_process(worker)


def test_beat_takes_its_schedule_file_from_dotenv_and_its_log_level_from_the_environment(tmp_path: Path) -> None:
    # Given a .env naming beat's schedule file and a log level, and a shell naming another level
    schedule = tmp_path / "schedule-named-in-dotenv"
    checkout = checkout_with_dotenv(tmp_path, f"BEAT_SCHEDULE_FILE={schedule}\nLOG_LEVEL=INFO\n")
    log_path = tmp_path / "beat.log"

    # When scripts/beat is run there by hand
    beat = run_by_hand(checkout, "beat", log_path, LOG_LEVEL="ERROR")

    # Then it keeps .env's schedule file and logs at the shell's level
    try:
        assert wait_for_line(r"\. db -> .*$", beat, log_path) == f". db -> {schedule}"
        assert wait_for_line(r"\. logfile -> .*$", beat, log_path) == ". logfile -> [stderr]@%ERROR"
    finally:
        stop_process(beat)


# .env files an operator may be left with that cannot be read: saved by a Windows editor in its
# own code page (cp1252's "ö", not UTF-8), a link to a file that is not there (a secrets mount
# missing), and a line that is no assignment (its `=` left out). Each went unread (the line:
# dropped, and logged whole, its secret with it), and the script started on the defaults.
UNREADABLE_DOTENVS = {
    "not-utf-8": ("WORKER_NAME=named-in-dotenv\nPOSTGRES_PASSWORD=Passw\xf6rt\n".encode("cp1252"),
                  "cannot read .env: line 2 is not UTF-8 text"),
    "link-to-nothing": (None, "cannot read .env: No such file or directory"),
    "no-equals-sign": (b"# the database\n  # (managed)\n\nDATABASE_URL postgres://jobapi:s3cret@db.example/jobapi\n",
                       "cannot read .env: line 4 is not NAME=value"),
}


def write_dotenv(checkout: Path, content: bytes | None) -> None:
    """`content` as the checkout's .env; None: a link to a file that is not there."""
    (checkout / ".env").unlink()
    if content is None:
        (checkout / ".env").symlink_to(checkout.parent / "not-there")
    else:
        (checkout / ".env").write_bytes(content)


@pytest.mark.parametrize("script", ["web", "worker", "beat"])
@pytest.mark.parametrize("dotenv", UNREADABLE_DOTENVS)
def test_a_dotenv_that_cannot_be_read_stops_the_script_with_the_reason(
    tmp_path: Path, script: str, dotenv: str,
) -> None:
    # Given a checkout whose .env is there but cannot be read
    content, reason = UNREADABLE_DOTENVS[dotenv]
    checkout = checkout_with_dotenv(tmp_path, "")
    write_dotenv(checkout, content)
    log_path = tmp_path / f"{script}.log"

    # When the script is run there by hand
    process = run_by_hand(checkout, script, log_path, PORT=str(free_port()))
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop_process(process)

    # Then it stops at once, failing, with the reason in one line, and starts nothing
    output = log_path.read_text()
    assert process.returncode == 1, output
    assert output == f"{checkout / 'scripts' / script}: {reason}\n"


# scripts/dotenv.sh's step, slowed as it loads python-dotenv so that the test's Ctrl-C finds it
# reading .env (STARTED written then).
_DOTENV_STEP_RUNNING = """\
import importlib.abc, os, sys, time
if sys.argv[0] == "-c" and "STEP_STARTED" in os.environ:
    class Held(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "dotenv":
                open(os.environ["STEP_STARTED"], "w").close()
                time.sleep(30)
            return None
    sys.meta_path.insert(0, Held())
"""


@pytest.mark.parametrize("script", ["web", "worker"])
def test_ctrl_c_while_the_script_reads_dotenv_stops_it_without_a_traceback(tmp_path: Path, script: str) -> None:
    # Given a script run by hand, reading its checkout's .env
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_DOTENV_STEP_RUNNING)
    started = tmp_path / "step-started"
    checkout = checkout_with_dotenv(tmp_path, "WORKER_NAME=named-in-dotenv\n")
    log_path = tmp_path / f"{script}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(checkout / "scripts" / script)], cwd=checkout, stdout=log, stderr=subprocess.STDOUT,
            env=environment_by_hand(checkout, PYTHONPATH=str(site), STEP_STARTED=str(started),
                                    PORT=str(free_port())),
            start_new_session=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)

    # When Ctrl-C is pressed (to its whole process group, as a terminal sends it)
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    # Then it stops there, quietly: no KeyboardInterrupt traceback, nothing started
    assert log_path.read_text() == ""
    assert process.returncode != 0


def test_a_byte_order_mark_before_dotenvs_first_line_is_not_part_of_its_name(tmp_path: Path) -> None:
    # Given a .env saved with a byte order mark (as Windows editors may), naming the worker first
    checkout = checkout_with_dotenv(tmp_path, "")
    (checkout / ".env").write_bytes("\ufeffWORKER_NAME=named-in-dotenv\r\nWORKER_CONCURRENCY=1\r\n".encode())
    log_path = tmp_path / "worker.log"

    # When scripts/worker is run there by hand
    worker = run_by_hand(checkout, "worker", log_path)

    # Then it takes .env's first variable too (it was read as "\ufeffWORKER_NAME", and dropped)
    try:
        wait_for_line(r"concurrency: .*$", worker, log_path)
        assert re.search(r"^ -+ named-in-dotenv@", log_path.read_text(), re.MULTILINE), log_path.read_text()
    finally:
        stop_process(worker)


def test_the_health_check_fails_with_the_reason_on_a_dotenv_that_cannot_be_read(tmp_path: Path) -> None:
    # Given a checkout whose .env links to a file that is not there
    checkout = checkout_with_dotenv(tmp_path, "")
    write_dotenv(checkout, None)

    # When the web check is run there by hand
    result = check_by_hand(checkout, "web")

    # Then it fails saying so (it asked the default port, and called whatever answered there)
    assert result.returncode == 1
    assert result.stderr == f"healthcheck: cannot read {checkout / '.env'}: No such file or directory\n"


def settings_in(checkout: Path, code: str) -> subprocess.CompletedProcess[str]:
    """`code` run after the settings load in the checkout, its own core/ (the settings find .env
    beside their package's real path, which for a link is the repository's)."""
    (checkout / "core").unlink()
    shutil.copytree(REPO / "core", checkout / "core", ignore=shutil.ignore_patterns("__pycache__"))
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup()\n{code}"], cwd=checkout,
        env=environment_by_hand(checkout, DJANGO_SETTINGS_MODULE="core.settings"),
        capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.parametrize("dotenv", UNREADABLE_DOTENVS)
def test_the_settings_refuse_a_dotenv_that_cannot_be_read(tmp_path: Path, dotenv: str) -> None:
    # Given a checkout whose .env is there but cannot be read
    content, reason = UNREADABLE_DOTENVS[dotenv]
    checkout = checkout_with_dotenv(tmp_path, "")
    write_dotenv(checkout, content)

    # When the settings load there (manage.py, a worker, the API)
    result = settings_in(checkout, "print('loaded')")

    # Then they stop, naming why (they went on on the embedded database), and no secret
    assert result.returncode != 0 and "loaded" not in result.stdout, result.stdout
    why = reason.removeprefix("cannot read .env: ")
    assert f"ImproperlyConfigured: Cannot read {checkout / '.env'}: {why}." in result.stderr, result.stderr
    assert "s3cret" not in result.stderr


def test_the_settings_take_dotenvs_first_variable_after_a_byte_order_mark(tmp_path: Path) -> None:
    # Given a .env saved with a byte order mark, naming the API's host first
    checkout = checkout_with_dotenv(tmp_path, "")
    (checkout / ".env").write_bytes("\ufeffALLOWED_HOSTS=bom.example.com\r\nDEBUG=false\r\n".encode())

    # When the settings load there
    result = settings_in(checkout, "from django.conf import settings; print(settings.ALLOWED_HOSTS)")

    # Then they have it (they dropped the line as "Invalid line", and took the default hosts)
    assert result.stdout == "['bom.example.com']\n", result.stderr


def test_env_example_copied_as_dotenv_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given .env.example as an operator copies it to .env, and an environment that sets nothing
    read: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", read)

    # When the reader the settings and the scripts share reads it
    read_dotenv(REPO / ".env.example")

    # Then it takes each of its variables (no line stops it)
    assert read == {name: value for name, value, active in env_example() if active}


def test_spaces_and_a_comment_around_a_dotenv_value_are_not_part_of_it_for_the_scripts(tmp_path: Path) -> None:
    # Given a .env whose values have spaces after them, which no editor shows, a comment, and
    # spaces around an `=` (as Compose reads them)
    checkout = checkout_with_dotenv(
        tmp_path, "WORKER_NAME=named-in-dotenv  # this machine's\nQUEUES = jobs_long \nWORKER_CONCURRENCY= 1\n")
    log_path = tmp_path / "worker.log"

    # When scripts/worker is run there by hand
    worker = run_by_hand(checkout, "worker", log_path)

    # Then it is named, and consumes, as .env says (it was "named-in-dotenv  @host", and its
    # queue "jobs_long ": Invalid exchange name, it stopped; `QUEUES = ...` was dropped)
    try:
        wait_for_line(r"concurrency: .*$", worker, log_path)
        assert re.search(r"^ -+ named-in-dotenv@", log_path.read_text(), re.MULTILINE), log_path.read_text()
        assert re.search(r"^ +\.> jobs_long +exchange=jobs_long\(direct\)", log_path.read_text(), re.MULTILINE), \
            log_path.read_text()
    finally:
        stop_process(worker)


def test_spaces_and_a_comment_around_a_dotenv_value_are_not_part_of_it_for_the_settings(tmp_path: Path) -> None:
    # Given a .env whose host name has a space after it, and its key a comment
    checkout = checkout_with_dotenv(
        tmp_path, "ALLOWED_HOSTS=api.example.com \nSECRET_KEY=s3cret#1 # rotated in May\n"
                  "SECRET_KEY_FALLBACKS= \"old # key\" # until June\n")

    # When the settings load there
    result = settings_in(
        checkout, "from django.conf import settings as s; print(s.ALLOWED_HOSTS, s.SECRET_KEY, s.SECRET_KEY_FALLBACKS)")

    # Then the host is the name alone (the API answered 400 to every request), the key without
    # the comment (another key than the containers'), a quoted value kept whole
    assert result.stdout == "['api.example.com'] s3cret#1 ['old # key']\n", result.stderr


def test_the_worker_check_by_hand_with_the_systems_python_and_no_dotenv_runs_with_the_projects(
    tmp_path: Path,
) -> None:
    # Given a checkout with no .env and its .venv, and a shell whose python3 has none of the
    # project's packages (no Celery) and that names no virtualenv
    checkout = checkout_with_dotenv(tmp_path, "")
    (checkout / ".env").unlink()
    system_python = Path(sys.base_prefix) / "bin"
    assert subprocess.run([system_python / "python3", "-c", "import celery"], check=False,
                          capture_output=True).returncode

    # When the worker check is run there by hand, for a worker that is not running
    result = check_by_hand(checkout, "worker", PATH=f"{system_python}:{os.environ['PATH']}", VIRTUAL_ENV="",
                           WORKER_NAME="not-running")

    # Then it asks it with the project's Python, and says it did not answer (it died of `No
    # module named 'celery'`)
    assert result.returncode == 1
    assert "worker unhealthy: not-running@" in result.stderr and "did not answer a ping" in result.stderr, result.stderr
