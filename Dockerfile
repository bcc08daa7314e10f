# One image for every service of docker-compose.yaml: the API (the default command), the
# workers, beat, the migrations and Flower, each started by its script in scripts/.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies in their own layer, rebuilt only when requirements change (not on every edit).
# Every pinned package ships a wheel for this Python, so no compiler is needed.
RUN python -m venv "$VIRTUAL_ENV"
COPY requirements/constraints.txt requirements/base.txt requirements/production.txt /app/requirements/
RUN pip install -r /app/requirements/production.txt

# The code belongs to root and is read-only to the service user (uid 10001); only DATA_DIR is
# writable.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app
WORKDIR /app
COPY . .

# Static files (the API docs' assets) at build time, served by whitenoise. The placeholder key
# exists only inside this one step: settings need some key to load, collectstatic signs nothing.
RUN SECRET_KEY=build-only-placeholder-not-used-at-runtime DATA_DIR=/tmp/build \
      python manage.py collectstatic --noinput -v0 \
 && rm -rf /tmp/build \
 && mkdir -p /app/var \
 && chown app:app /app/var

# HOST: inside a container gunicorn listens on every interface (compose publishes the port).
# LOG_FORMAT: one JSON object a line, for a log collector (.env may say text).
ENV DATA_DIR=/app/var \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python", "/app/scripts/healthcheck", "web"]
CMD ["/app/scripts/web"]
