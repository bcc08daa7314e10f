"""Settings for the test run: PostgreSQL and Redis on 127.0.0.1 unless the environment says
otherwise, a test database and Redis key prefix of this run's own."""
import atexit
import os
import shutil
import tempfile
import uuid

# Names this run; subprocesses (the Celery worker) inherit it through the environment.
RUN_ID = os.environ.setdefault("TEST_RUN_ID", "main")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jobapi")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("CACHE_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
# Queues of this run only: an aborted run's leftovers are never consumed by the next one.
os.environ.setdefault("CELERY_BROKER_KEY_PREFIX", f"test-{RUN_ID}-{uuid.uuid4().hex[:8]}:")
os.environ.setdefault("JOB_DISPATCH_SWEEP_SECONDS", "1")
# The shared worker runs 4 jobs at once, and tests run several of one client's jobs together.
os.environ.setdefault("JOB_MAX_RUNNING_PER_CLIENT", "8")
# The suite talks plain http to its own servers, whatever a developer's .env says.
os.environ["SECURE_SSL_REDIRECT"] = "false"
# Webhook receivers in tests listen on loopback; every other non-public range stays refused.
os.environ.setdefault("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")
# Three attempts a second apart, and a short timeout, so retry and timeout tests end quickly.
os.environ.setdefault("WEBHOOK_RETRY_SCHEDULE", "0,1,1")
os.environ.setdefault("WEBHOOK_TIMEOUT_SECONDS", "3")
# An endpoint is disabled after one delivery's three attempts fail (over two seconds).
os.environ.setdefault("WEBHOOK_ENDPOINT_DISABLE_AFTER_FAILURES", "3")
os.environ.setdefault("WEBHOOK_ENDPOINT_DISABLE_AFTER_SECONDS", "1")
# Off but where a test turns it on (tests/core/test_api_auth_failures.py): the suite's refused
# keys all come from 127.0.0.1, whose budget every concurrent run shares (the limiter's Redis
# keys name no run), so one run's refusals would get another run's new keys a 429.
os.environ.setdefault("API_AUTH_FAILURE_RATE_PER_MINUTE", "0")
# Off but where a test turns it on (tests/core/test_admin_login_username_limit.py), for the same
# reason: every run's tests fail logins as "admin", counted for an hour whatever the address.
os.environ.setdefault("ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR", "0")
# Off but where a test turns it on (tests/core/test_admin_login_global_limit.py): one count for
# every failed login of every run's tests.
os.environ.setdefault("ADMIN_LOGIN_FAILURES_PER_MINUTE", "0")
# The test process (and its live server thread) closes connections after each request, so the
# test database can be dropped at the end; worker subprocesses keep theirs (see worker_env).
os.environ.setdefault("DB_CONN_MAX_AGE", "0")

# Metrics on for the whole run, so every test exercises their recording: one directory for the
# run, shared by this process (the live server) and the workers it starts, which inherit it.
os.environ.setdefault("METRICS_ENABLED", "true")
os.environ.setdefault("METRICS_TOKEN", "test-metrics-token")


def _remove_at_exit(directory: str, creator_pid: int) -> None:
    """Removes the run's metrics directory as the process that made it exits, once its session has
    stopped the workers that inherited it (each run left one behind). The pid: a child forked
    from it without exec inherits the handler, and would remove it as it ends, under the session
    still writing there."""
    if os.getpid() == creator_pid:
        shutil.rmtree(directory, ignore_errors=True)


if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"jobapi-metrics-{RUN_ID}-")
    atexit.register(_remove_at_exit, os.environ["PROMETHEUS_MULTIPROC_DIR"], os.getpid())

from core.settings import *  # noqa: E402,F403

DATABASES["default"]["TEST"] = {"NAME": f"test_jobapi_{RUN_ID}"}  # noqa: F405
# Requests made in this process (the test client, the live server) keep to their thread's
# connection: the test's own, so its transaction and CaptureQueriesContext see them. A server a
# test starts through scripts/web turns it on through the environment.
WEB_TURN_CONNECTIONS = os.environ.get("WEB_TURN_CONNECTIONS") == "true"
