"""Profile the submit and deliver paths in one process with pyinstrument (requirements/dev.txt).

    .venv/bin/python -m bench.profile submit [N]    # N x POST /api/jobs/ through Django's handler
    .venv/bin/python -m bench.profile deliver [N]   # N x webhooks.attempts.deliveries_attempt, one each
    .venv/bin/python -m bench.profile poll [N]

Runs against a scratch database (`jobapi_bench_profile`, dropped afterwards) and Redis
database 12 (flushed), like `make bench`; the deliveries go to bench/receiver.py on loopback.
Prints pyinstrument's call tree, and the wall time per operation.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DB = "jobapi_bench_profile"


def main() -> None:
    what = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    from bench.run import (
        BROKER_DB,
        PG_ADMIN_URL,
        REDIS_URL,
        Receiver,
        Stack,
        admin_sql,
        redis_flush,
    )

    os.environ.update(
        {
            "DATABASE_URL": f"{PG_ADMIN_URL}/{DB}",
            "CELERY_BROKER_URL": f"{REDIS_URL}/{BROKER_DB}",
            "CACHE_URL": f"{REDIS_URL}/{BROKER_DB}",
            "SECRET_KEY": secrets.token_urlsafe(30),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "DATA_DIR": tempfile.mkdtemp(prefix="jobapi-profile-"),  # removed on the way out
            "DJANGO_SETTINGS_MODULE": "core.settings",
        }
    )
    admin_sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    admin_sql(f"CREATE DATABASE {DB}")
    redis_flush()
    stack = Stack()
    try:
        subprocess.run([sys.executable, "manage.py", "migrate"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        import django

        django.setup()
        from django.test import Client as DjangoClient
        from pyinstrument import Profiler

        from core.services import api_key_create, client_create

        keys = [api_key_create(client=client_create(name=f"p{i}")) for i in range(max(1, count // 300))]
        profiler = Profiler(interval=0.0005)
        if what in ("submit", "poll"):
            clients = [DjangoClient(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {k}") for k in keys]
            body = {"job_name": "api.tasks.hello_world", "payload": {"message": "p"}}
            ids = []
            for i in range(50):  # warm
                ids.append(clients[0 if what == "poll" else i % len(clients)].post(
                    "/api/jobs/", body, content_type="application/json").json()["id"])
            started = time.perf_counter()
            profiler.start()
            for i in range(count):
                if what == "submit":
                    response = clients[i % len(clients)].post("/api/jobs/", body,
                                                              content_type="application/json")
                    assert response.status_code == 202, response.content
                else:
                    response = clients[0].get(f"/api/jobs/{ids[i % len(ids)]}/")
            profiler.stop()
        elif what == "deliver":
            from django.db import transaction

            from core.models import Client
            from webhooks import attempts, outbox
            from webhooks.models import Delivery

            receiver = Receiver(stack)
            owner = Client.objects.first()
            assert owner is not None
            # Record without publishing: this process sends them itself, under the profiler.
            with transaction.atomic():
                for i in range(count + 20):
                    outbox.event_record(owner_id=owner.id, subject_id=uuid.uuid4(),
                                          event_type="job.succeeded", data={"id": str(i)},
                                          callback_url=f"{receiver.url}/p/{i}")
                transaction.set_rollback(False)
            redis_flush()  # drop the published attempts: nothing consumes them here
            ids = list(Delivery.objects.order_by("pk").values_list("pk", flat=True))
            for delivery_id in ids[:20]:
                attempts.deliveries_attempt(delivery_ids=[delivery_id])
            started = time.perf_counter()
            profiler.start()
            for delivery_id in ids[20:]:
                attempts.deliveries_attempt(delivery_ids=[delivery_id])
            profiler.stop()
        else:
            sys.exit(f"unknown path {what}: submit, poll or deliver")
        elapsed = time.perf_counter() - started
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        print(json.dumps({"path": what, "count": count,
                          "ms_per_operation": round(elapsed / count * 1000, 3)}))
    finally:
        stack.stop_all()
        from django.db import connections

        connections.close_all()
        admin_sql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        redis_flush()
        # Its data and the receiver's log: each run left both in /tmp (bench.run keeps its logs,
        # and says where; nothing here is worth keeping once the tree is printed).
        for directory in (os.environ["DATA_DIR"], stack.logs):
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
