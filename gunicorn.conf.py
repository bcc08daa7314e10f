"""Gunicorn settings for the API (read by `scripts/web`; gunicorn loads ./gunicorn.conf.py)."""
import fcntl
import gc
import logging
import multiprocessing
import os
import runpy
import struct
import threading
import time

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# One process per core plus one keeps both cores busy while a request waits on PostgreSQL or
# Redis. Threaded workers (gthread): a `Prefer: wait` or an event stream blocks one thread,
# holding no database connection, in poll() until its job's event wakes it (jobs/wakeups.py),
# so a process serves up to WEB_THREADS of them at once while its other threads serve the
# short requests as a sync worker would (docs/streams.md has the limits and the measurements).
# scripts/web refuses a number outside its range here (as the settings do theirs): WEB_CONCURRENCY,
# gunicorn reads as it loads, before this file.
# Its default stops at WEB_PROCESSES_MAX (core/web_defaults.py, the script's most too): cores + 1
# on a machine of 64 cores or more was past what the script refuses, each process PostgreSQL
# connections more.
WEB_DEFAULTS = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "core", "web_defaults.py"))
workers = int(os.environ.get("WEB_CONCURRENCY", min(multiprocessing.cpu_count() + 1, WEB_DEFAULTS["WEB_PROCESSES_MAX"])))
# Those threaded workers (gthread), each answering a request it cannot parse (a request line past 4 KB, too
# many headers, a malformed one), and its own 500, in the API's JSON error shape rather than an HTML page,
# each answer with an X-Request-ID (gunicorn_worker.py: a module of its own, importing nothing of the application).
worker_class = "gunicorn_worker.JsonErrorThreadWorker"
# Its default is the settings' and scripts/web's too (core/web_defaults.py, read by its path: the
# master imports nothing of `core`).
threads = int(os.environ.get("WEB_THREADS", WEB_DEFAULTS["WEB_THREADS_DEFAULT"]))
# Connections a process holds at once: no more than its threads, so a process whose threads all
# wait stops accepting and the kernel hands new connections to the others (and, as with sync
# workers, an answered connection is closed rather than kept alive, in the thread that answered it:
# gunicorn_connections.py).
worker_connections = int(os.environ.get("WEB_MAX_CONNECTIONS", threads))
# A worker whose main loop is stuck this long is killed and replaced. Its requests run in its
# threads while the loop goes on, so this cuts none of them (API_DB_STATEMENT_TIMEOUT_SECONDS
# bounds their statements).
timeout = int(os.environ.get("WEB_TIMEOUT_SECONDS", "30"))
# A stopping worker finishes its requests in this time: short requests, and waits and streams,
# which answer at once (post_worker_init).
graceful_timeout = 20
# Recycle workers now and then so a slow leak cannot grow without bound.
max_requests = 20000
max_requests_jitter = 2000
# Tells the settings that this process serves the API: its database connections bound their lock
# waits and their statements' runs (API_DB_LOCK_TIMEOUT_SECONDS, API_DB_STATEMENT_TIMEOUT_SECONDS),
# which a worker's or a migration's do not.
raw_env = ["JOBAPI_WEB_PROCESS=true"]
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "warning")
# gunicorn's own lines, the master's and the workers' (and the access log's), in the application's
# format (LOG_FORMAT, which the settings check): under json, its text lines were the ones on the
# stream a log shipper could not parse (gunicorn_worker.py, which imports nothing of `core`).
logger_class = "gunicorn_worker.JsonLogger" if os.environ.get("LOG_FORMAT") == "json" else "gunicorn_worker.TextLogger"
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto. The settings read the same variable
# (FORWARDED_ALLOW_IPS): the admin's login limit believes X-Forwarded-For from these addresses only.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# No `gunicornc` control socket: by default every instance would share ~/.gunicorn/gunicorn.ctl
# (tests run several servers at once), and the image's user has no home directory to put it in.
control_socket_disable = True
# The worker heartbeat file: in memory where there is /dev/shm, since its fchmod on a
# disk-backed filesystem (a container's overlay) can block and get healthy workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def on_starting(server: object) -> None:
    """gunicorn's WARNING at every start when a process's connections are no more than its
    threads, "No keepalived connections can be handled. Check the number of worker connections
    and threads.", is left out: that is the configuration (worker_connections, above), keep-alive
    off as with sync workers, not a mistake to check. It was the first line `make run` printed."""
    server.log.error_log.addFilter(_not_keep_alive_off)  # type: ignore[attr-defined]


def _not_keep_alive_off(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("No keepalived connections can be handled.")


def child_exit(server: object, worker: object) -> None:
    """A worker process ended: its live gauges stop counting in /metrics, and its counters and
    histograms join the archive (scripts/web gives the processes their PROMETHEUS_MULTIPROC_DIR
    when metrics are on)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
        # Raised here, an error would stop the master. Left unmerged, the worker's files stay
        # and scrapes go on counting them.
        try:
            process_files_merge(directory, worker.pid)  # type: ignore[attr-defined]
        except OSError as exc:  # the directory's filesystem full (ENOSPC), or gone
            server.log.error("Could not merge the metrics of worker %s: %s", worker.pid, exc)  # type: ignore[attr-defined]
        except Exception:
            server.log.exception("Could not merge the metrics of worker %s", worker.pid)  # type: ignore[attr-defined]


# The lock a scrape holds shared while it reads the directory (core/metrics.py, MERGE_LOCK_FILE:
# the master imports nothing of the application, so the name is written twice).
MERGE_LOCK_FILE = "merge.lock"


def process_files_merge(directory: str, pid: int) -> None:
    """Add an ended process's counters and histograms (every sample of both adds up) to the
    directory's `<kind>_archive.db` and remove its files, so a scrape reads two files for all
    the ended processes instead of two for each (core/metrics.py says why).

    MmapedDict is prometheus-client's own file format (the version is pinned in requirements);
    `<kind>_<anything>.db` is read by its MultiProcessCollector as a file of that kind."""
    with open(os.path.join(directory, MERGE_LOCK_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for kind in ("counter", "histogram"):
                ended = os.path.join(directory, f"{kind}_{pid}.db")
                if not os.path.exists(ended):
                    continue
                archive_path = os.path.join(directory, f"{kind}_archive.db")
                _space_reserved(archive_path, _HEADER_BYTES + _used_bytes(archive_path) + _used_bytes(ended))
                archive = MmapedDict(archive_path)
                try:
                    for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(ended):
                        total, _ = archive.read_value(key)
                        archive.write_value(key, total + value, timestamp)
                finally:
                    archive.close()
                os.remove(ended)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# A MmapedDict file's header: the bytes it holds (4), and padding.
_HEADER_BYTES = 8


def _used_bytes(path: str) -> int:
    """The bytes a MmapedDict file holds (the count its first 4 bytes keep), 0 for no file."""
    try:
        with open(path, "rb") as file:
            return struct.unpack("i", file.read(4).ljust(4, b"\0"))[0]
    except FileNotFoundError:
        return 0


def _space_reserved(path: str, size: int) -> None:
    """The file's first `size` bytes have their disk (or memory) space, or OSError (ENOSPC).

    MmapedDict writes through a memory map: a page of a sparse file touched when its
    filesystem is full kills the process with SIGBUS, which nothing can catch, and here that
    process is gunicorn's master. An archive of `size` bytes (a header, its own entries and the
    ended process's: both files encode a key the same way) never grows while it merges, so every
    page it touches has its space reserved beforehand."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError:
        if os.fstat(descriptor).st_size == 0:  # made just now: no empty archive for scrapes to read
            os.remove(path)
        raise
    finally:
        os.close(descriptor)


def post_worker_init(worker: object) -> None:
    """The application is loaded: a thread watches for the worker's stop (below), and what it
    loaded (~270,000 objects: Django, DRF, Celery) is left out of the garbage collector's walks
    from now on, and young objects are collected every 10,000 allocations instead of 700, so
    most of a request's garbage is freed by reference counting before a collection walks it. A
    request then takes 3-6 % less CPU (blocks alternating in one process, docs/benchmarks.md)."""
    # Imported here, where the application is loaded: importing `core` in the master would load
    # the Celery app there (core/__init__.py), which would then write metrics files of its own.
    from core.log_database_errors import DatabaseErrorFirstLine
    from core.log_volume import InvalidRequests, StreamWriteEnded

    threading.Thread(target=_stop_waiters_when_stopping, args=(worker,), name="stop-watch", daemon=True).start()
    worker.log.error_log.addFilter(StreamWriteEnded())  # type: ignore[attr-defined]
    worker.log.error_log.addFilter(InvalidRequests())  # type: ignore[attr-defined]
    # gunicorn's traceback of a body that raised after its headers went out (a stream's read) is
    # cut as the application's are: a database error's first line, PostgreSQL's DETAIL and the
    # statement it quotes, a client's values, left out.
    worker.log.error_log.addFilter(DatabaseErrorFirstLine())  # type: ignore[attr-defined]
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


# How often a worker looks whether it began to stop.
STOP_WATCH_SECONDS = 0.2


def _stop_waiters_when_stopping(worker: object) -> None:
    """Once the worker begins a graceful stop, its `Prefer: wait` requests answer with the job
    as it is and its streams end (jobs.wakeups), instead of blocking until graceful_timeout
    kills them unanswered. A stop is the worker's `alive` turning False: on SIGTERM (its
    handler sets it) and on reaching max_requests (a request thread sets it), where gunicorn
    calls no hook. Looked at from this thread rather than from a wrapped signal handler: the
    handler runs in the main thread between two of its steps, perhaps while that thread holds a
    lock (starting a pool thread), so it may neither take the hub's lock nor start a thread."""
    from jobs.wakeups import hub  # the application is loaded: Django is set up

    while worker.alive:  # type: ignore[attr-defined]
        time.sleep(STOP_WATCH_SECONDS)
    hub.stop()
