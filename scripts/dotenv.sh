# Sourced by the scripts (from the checkout's root): exports .env's variables that the
# environment does not set, read as the settings read it (core/dotenv.py: Compose's reading; the
# environment wins over the file), so a script run by hand takes its own variables (PORT,
# WEB_CONCURRENCY, QUEUES, LOG_LEVEL, ...) from the same file as the settings. The image has no
# .env (.dockerignore): under compose every variable comes from the environment, as before.
#
# A .env there that cannot be read (not this user's to read, a link to nothing, not UTF-8 text,
# a line that is not NAME=value) stops the script with the reason, as it stops the settings: they
# share the reader (core/dotenv.py, loaded by its path). The step's failure was lost in
# `eval "$(...)"`, and the script went on without .env's variables, its processes on the
# defaults (another port, queue, log level; the embedded SQLite database), saying nothing.
#
# Ctrl-C while .env is read stops the script quietly, as scripts/run-dev's start-up steps: the
# step starts with SIGINT ignored (Python installs no KeyboardInterrupt handler, whose traceback
# was the sight) and gives it its default action back as its first statement; the trap stops the
# script once the step ends, however it ends. exec gives the trap back to the default, so the
# process a script execs is stopped by Ctrl-C as before.
trap 'exit 130' INT
if [ -e .env ] || [ -L .env ]; then
  dotenv_exports="$(trap '' INT; exec "${VIRTUAL_ENV:-.venv}/bin/python" -c 'import signal
signal.signal(signal.SIGINT, signal.SIG_DFL)
import os, runpy, shlex, sys
try:
    before = set(os.environ)
    runpy.run_path("core/dotenv.py")["read_dotenv"](".env")
    print("\n".join(f"export {name}={shlex.quote(os.environ[name])}" for name in sorted(set(os.environ) - before) if name.isidentifier()))
except Exception as exc:
    sys.exit(f"{sys.argv[1]}: cannot read .env: {exc}")' "$0")" || {
    dotenv_status=$?
    # 1: the step said why; above 128: a signal (Ctrl-C) stopped it, quietly.
    if [ "$dotenv_status" -ne 1 ] && [ "$dotenv_status" -le 128 ]; then
      echo "$0: cannot read .env: ${VIRTUAL_ENV:-.venv}/bin/python exited $dotenv_status" >&2
    fi
    [ "$dotenv_status" -gt 128 ] || dotenv_status=1
    exit "$dotenv_status"
  }
  eval "$dotenv_exports"
  unset dotenv_exports
fi

# Whether a switch (METRICS_ENABLED) is on, read as the settings read it (core/settings/base.py,
# Env.bool): true, on, ok, y, yes or 1, in any case. A script that saw only "true" left
# METRICS_ENABLED=True or =1 without its metrics directory while the settings took it as on:
# /metrics answered 500 and the workers served nothing.
switch_on() {
  case "$(printf '%s' "$1" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')" in
    true | on | ok | y | yes | 1) return 0 ;;
    *) return 1 ;;
  esac
}

# Stops the script unless variable $1's value ($2) is a whole number from $3 to $4, naming the
# variable and its range, as the settings stop the start (core/settings/base.py, Env.int). The
# numbers a script hands its server before the settings load (gunicorn's processes, threads and
# connections, celery's --concurrency) were taken as they came: 0 started a server serving
# nothing, a word was a traceback from deep in gunicorn or celery naming no variable, and a
# count of 100000 started a server that ran out of memory, PostgreSQL connections or descriptors.
whole_number_in_range() {
  case "$2" in
    '' | *[!0-9]*) ;;
    *) [ "$2" -ge "$3" ] 2>/dev/null && [ "$2" -le "$4" ] && return 0 ;;  # a number past the shell's is refused too
  esac
  echo "$0: $1 must be a whole number from $3 to $4, not '$2'." >&2
  exit 1
}

# The same check of variable $1 when it is set, whatever its value (empty too); unset, its server
# takes its own default (each script tested whether the variable was set before every such check).
whole_number_in_range_if_set() {
  eval "checked_set=\${$1+set} checked_value=\${$1-}"
  [ -z "$checked_set" ] || whole_number_in_range "$1" "$checked_value" "$2" "$3"
}
