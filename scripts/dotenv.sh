# Sourced by the scripts (from the checkout's root): exports .env's variables that the
# environment does not set, read as the settings read it (django-environ's reader; the
# environment wins over the file), so a script run by hand takes its own variables (PORT,
# WEB_CONCURRENCY, QUEUES, LOG_LEVEL, ...) from the same file as the settings. The image has no
# .env (.dockerignore): under compose every variable comes from the environment, as before.
if [ -f .env ]; then
  eval "$("${VIRTUAL_ENV:-.venv}/bin/python" -c 'import os, shlex, environ
before = set(os.environ)
environ.Env.read_env(".env", overwrite=False)
print("\n".join(f"export {name}={shlex.quote(os.environ[name])}" for name in sorted(set(os.environ) - before) if name.isidentifier()))')"
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
