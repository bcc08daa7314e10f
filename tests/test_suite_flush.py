"""The suite's own safety net: a transactional test's closing flush survives a deadlock with a
statement the shared worker runs at that moment (see conftest._flush_retried_after_a_deadlock),
whichever connection object the thread flushes on."""
from __future__ import annotations

import re
import threading
import time
from typing import Any

import psycopg2
from django.core.management import call_command
from django.core.management.color import no_style
from django.core.management.sql import sql_flush
from django.db import DEFAULT_DB_ALIAS, connection, connections

from core.models import Client
from core.services import client_create


def test_a_flush_that_deadlocks_with_another_transaction_is_run_again(
    transactional_db: Any, celery_worker: str
) -> None:
    # Given the tables in the order the flush's TRUNCATE locks them
    truncate = next(sql for sql in sql_flush(no_style(), connection) if sql.startswith("TRUNCATE"))
    tables = re.findall(r'"([^"]+)"', truncate)
    first, last = tables[0], tables[-1]
    client_create(name="to-be-flushed")
    # on a connection object the thread got after the worker started, as a test serving requests
    # on their turns' connections leaves it (core/concurrency.py)
    connection.close()
    del connections[DEFAULT_DB_ALIAS]

    # and a transaction holding the last of them, which will want the first one after the flush
    # has taken it (a patient one, so the flush is the side PostgreSQL aborts)
    db = connection.settings_dict
    other = psycopg2.connect(
        dbname=db["NAME"], user=db["USER"], host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432
    )
    cursor = other.cursor()
    cursor.execute("SET deadlock_timeout = '10s'")
    cursor.execute(f'LOCK TABLE "{last}" IN ROW EXCLUSIVE MODE')

    def close_the_cycle() -> None:
        time.sleep(0.3)  # the flush is waiting for `last` by now
        cursor.execute(f'LOCK TABLE "{first}" IN ROW EXCLUSIVE MODE')
        other.commit()

    closer = threading.Thread(target=close_the_cycle)
    closer.start()
    try:
        # When the flush runs into that cycle
        call_command("flush", interactive=False, verbosity=0, inhibit_post_migrate=True)
    finally:
        closer.join()
        other.close()

    # then it ran again once the other transaction was over, and emptied the tables
    assert not Client.objects.exists()
