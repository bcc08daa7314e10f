"""The model provider's circuit breaker (jobs/types/checklist_breaker.py): checklist jobs run by
a worker of the test's own with the breaker on (the session worker's is off, and it stops taking
the `jobs` queue meanwhile), against the fake model server."""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from core import cache_redis
from core.celery import app as celery_app
from tests.conftest import (
    Api,
    fake_openai_env,
    free_port,
    start_worker,
    stop_process,
    worker_env,
)
from tests.console.test_metrics import scrape
from tests.fakes.openai_server import FakeOpenAI, Reply, Scenario
from tests.jobs.test_checklist import checklist_reply, submit, summary_reply
from tests.jobs.test_model_metrics import calls

COOLDOWN_SECONDS = 2
# Two tries a call: one job's two 500s are two failures in a row, which open the breaker.
BREAKER = {
    "OPENAI_MAX_ATTEMPTS": "2",
    "OPENAI_BREAKER_FAILURES": "2",
    "OPENAI_BREAKER_WINDOW_SECONDS": "60",
    "OPENAI_BREAKER_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS),
}


@contextlib.contextmanager
def jobs_run_by_own_worker(
    celery_worker: str, fake_openai: FakeOpenAI, log_dir: Path, **env: str
) -> Iterator[Path]:
    """A worker of the test's own takes the `jobs` queue, with `env`; yields its log."""
    celery_app.control.cancel_consumer("jobs", destination=[celery_worker], reply=True)
    process = None
    try:
        process, name = start_worker(
            log_dir=log_dir, queues="jobs", concurrency=2, env=worker_env(**{**fake_openai_env(fake_openai), **env})
        )
        yield log_dir / f"{name}.log"
    finally:
        if process is not None:
            stop_process(process)
        celery_app.control.add_consumer("jobs", destination=[celery_worker], reply=True)
        # The provider's keys and each client's (checklist_breaker.KEYS, client_keys).
        redis = cache_redis.client()
        if keys := list(redis.scan_iter(match=cache_redis.queue_key("model-breaker:*"))):
            redis.delete(*keys)


def answered_scenario(fake_openai: FakeOpenAI, gate: threading.Event | None = None) -> Scenario:
    scenario = fake_openai.scenario()
    scenario.add(summary_reply(scenario, gate=gate), checklist_reply())
    return scenario


def test_a_failing_provider_opens_the_breaker_and_one_probe_answered_closes_it(
    api: Api, celery_worker: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    before = scrape(api.base_url)
    with jobs_run_by_own_worker(celery_worker, fake_openai, tmp_path, **BREAKER):
        # Given a provider failing: a job's two tries answered 500
        failing = fake_openai.scenario()
        failing.add(Reply.error(500, "upstream down"), Reply.error(500, "upstream down"))
        first = api.wait(submit(api, failing)["id"])
        assert (first["status"], first["error"]["type"], len(failing.requests)) == (
            "FAILURE", "model_unavailable", 2), first

        # When the client's next job calls the model within the cool-down
        unsent = answered_scenario(fake_openai)
        refused = api.wait(submit(api, unsent)["id"])

        # Then it fails at once, its call not sent, saying why (the client's own breaker: a
        # deployment of one client has no other to count the provider out)
        assert (refused["status"], refused["error"]["type"]) == ("FAILURE", "model_provider_unavailable"), refused
        assert "failed this client's last 2 tries in a row" in refused["error"]["message"]
        assert unsent.requests == []

        # When the cool-down has passed: one call (the probe) is let through; held by the
        # provider, the calls meanwhile still fail at once
        time.sleep(COOLDOWN_SECONDS + 0.5)
        gate = threading.Event()
        probing = answered_scenario(fake_openai, gate=gate)
        probe = submit(api, probing)
        deadline = time.monotonic() + 30
        while not probing.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(probing.requests) == 1
        meanwhile = answered_scenario(fake_openai)
        held_back = api.wait(submit(api, meanwhile)["id"])
        assert (held_back["status"], held_back["error"]["type"]) == ("FAILURE", "model_provider_unavailable")
        assert "one call is trying it again" in held_back["error"]["message"]
        assert meanwhile.requests == []

        # Then the probe answered closes the breaker: its job and the next succeed
        gate.set()
        assert api.wait(probe["id"])["status"] == "SUCCESS"
        after = answered_scenario(fake_openai)
        assert api.wait(submit(api, after)["id"])["status"] == "SUCCESS"
        assert len(after.requests) == 2

    # And /metrics counts the two calls not sent apart from the tries made
    assert calls(before, scrape(api.base_url)) == {"server_error": 1, "failed": 1, "provider_unavailable": 2, "ok": 4}


def failing_scenario(fake_openai: FakeOpenAI, tries: int = 2) -> Scenario:
    """A document the provider fails on: each try answered 500 (the fake server keys its replies by
    a token in the document, as a real provider may fail on one input: a timeout on the largest
    document, a 500 on some text)."""
    scenario = fake_openai.scenario()
    scenario.add(*(Reply.error(500, "upstream failed on this input") for _ in range(tries)))
    return scenario


def test_one_clients_failing_calls_open_its_own_breaker_not_the_others(
    api: Api, make_api: Callable[..., Api], celery_worker: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    other = make_api()
    with jobs_run_by_own_worker(celery_worker, fake_openai, tmp_path, **BREAKER):
        # Given a client whose documents the provider fails on, twice (each job's two tries 500)
        for _ in range(2):
            failing = failing_scenario(fake_openai)
            failed = api.wait(submit(api, failing)["id"])
            assert failed["status"] == "FAILURE", failed
        assert failed["error"]["type"] == "model_provider_unavailable", failed

        # When another client's checklist job runs within the cool-down
        answered = answered_scenario(fake_openai)
        job = other.wait(submit(other, answered)["id"])

        # Then it reaches the provider and succeeds
        assert (job["status"], len(answered.requests)) == ("SUCCESS", 2), job

        # And the failing client's own calls still fail at once, unsent
        unsent = answered_scenario(fake_openai)
        refused = api.wait(submit(api, unsent)["id"])
        assert (refused["status"], refused["error"]["type"], unsent.requests) == (
            "FAILURE", "model_provider_unavailable", []), refused
        assert "this client's" in refused["error"]["message"]


def test_failures_of_two_clients_open_the_breaker_for_every_client(
    api: Api, make_api: Callable[..., Api], celery_worker: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    second, third = make_api(), make_api()
    with jobs_run_by_own_worker(celery_worker, fake_openai, tmp_path, **BREAKER):
        # Given a provider failing one client's two tries (its own breaker opened)
        first = api.wait(submit(api, failing_scenario(fake_openai))["id"])
        assert (first["status"], first["error"]["type"]) == ("FAILURE", "model_unavailable"), first

        # When it fails another client's try too
        failing = fake_openai.scenario()
        failing.add(Reply.error(500, "upstream down"), summary_reply(failing), checklist_reply())
        job = second.wait(submit(second, failing)["id"])

        # Then the breaker is open for every client: that job's retry and a third client's call are
        # not sent
        assert (job["status"], job["error"]["type"], len(failing.requests)) == (
            "FAILURE", "model_provider_unavailable", 1), job
        assert "failed 2 tries in a row" in job["error"]["message"]
        unsent = answered_scenario(fake_openai)
        refused = third.wait(submit(third, unsent)["id"])
        assert (refused["error"]["type"], unsent.requests) == ("model_provider_unavailable", []), refused


def test_one_client_counts_for_at_most_half_the_failures_that_open_the_breaker_for_all(
    api: Api, make_api: Callable[..., Api], celery_worker: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    other = make_api()
    with jobs_run_by_own_worker(celery_worker, fake_openai, tmp_path, **{**BREAKER, "OPENAI_BREAKER_FAILURES": "4"}):
        # Given a client whose documents the provider failed on 4 times in a row (two jobs' two tries)
        for _ in range(2):
            assert api.wait(submit(api, failing_scenario(fake_openai))["id"])["status"] == "FAILURE"

        # When a try of another client's fails once
        hiccup = fake_openai.scenario()
        hiccup.add(Reply.error(500, "upstream hiccup"), summary_reply(hiccup), checklist_reply())
        job = other.wait(submit(other, hiccup)["id"])

        # Then that is 3 failures counted of the 4 that open the breaker for all (the first
        # client's count for 2): its retry is sent, and its job succeeds
        assert (job["status"], len(hiccup.requests)) == ("SUCCESS", 3), job


def opened_for_all(first: Api, second: Api, fake_openai: FakeOpenAI) -> None:
    """The breaker opened for every client by two clients' failures: the first's two tries, the
    second's one."""
    assert first.wait(submit(first, failing_scenario(fake_openai))["id"])["status"] == "FAILURE"
    assert second.wait(submit(second, failing_scenario(fake_openai, tries=1))["id"])["status"] == "FAILURE"


def test_a_probe_one_client_fails_opens_its_own_breaker_and_another_clients_call_probes(
    api: Api, make_api: Callable[..., Api], celery_worker: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    second, third = make_api(), make_api()
    with jobs_run_by_own_worker(celery_worker, fake_openai, tmp_path, **BREAKER):
        # Given the breaker opened for every client by two clients' failures, its cool-down passed
        opened_for_all(api, second, fake_openai)
        unsent = answered_scenario(fake_openai)
        assert third.wait(submit(third, unsent)["id"])["error"]["type"] == "model_provider_unavailable"
        time.sleep(COOLDOWN_SECONDS + 0.5)

        # When the probe is a call of the client whose documents the provider fails on
        probing = fake_openai.scenario()
        probing.add(Reply.error(500, "upstream failed on this input"), summary_reply(probing), checklist_reply())
        probe = api.wait(submit(api, probing)["id"])

        # Then its client's breaker opens again (its retry not sent), not every client's: another
        # client's call is the next probe, answered, and its job succeeds
        assert (probe["error"]["type"], len(probing.requests)) == ("model_provider_unavailable", 1), probe
        assert "this client's" in probe["error"]["message"]
        answered = answered_scenario(fake_openai)
        job = third.wait(submit(third, answered)["id"])
        assert (job["status"], len(answered.requests)) == ("SUCCESS", 2), job


def test_probes_of_two_clients_that_fail_open_the_breaker_for_every_client_again(
    api: Api, make_api: Callable[..., Api], celery_worker: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    second, third = make_api(), make_api()
    with jobs_run_by_own_worker(celery_worker, fake_openai, tmp_path, **BREAKER):
        # Given the breaker opened for every client by two clients' failures, its cool-down passed
        opened_for_all(api, second, fake_openai)
        time.sleep(COOLDOWN_SECONDS + 0.5)

        # When the provider, still down, fails one client's probe, then another's
        for client in (api, second):
            probing = failing_scenario(fake_openai, tries=1)
            probing.add(summary_reply(probing), checklist_reply())
            probe = client.wait(submit(client, probing)["id"])
            assert (probe["error"]["type"], len(probing.requests)) == ("model_provider_unavailable", 1), probe

        # Then the breaker is open for every client again: a third client's call is not sent
        unsent = answered_scenario(fake_openai)
        refused = third.wait(submit(third, unsent)["id"])
        assert (refused["error"]["type"], unsent.requests) == ("model_provider_unavailable", []), refused
        assert "failed 2 tries in a row" in refused["error"]["message"]


def test_a_probe_that_fails_opens_the_breaker_again(
    api: Api, celery_worker: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    with jobs_run_by_own_worker(celery_worker, fake_openai, tmp_path, **BREAKER):
        # Given a breaker opened by a job's two 500s, and its cool-down passed
        failing = fake_openai.scenario()
        failing.add(Reply.error(500, "upstream down"), Reply.error(500, "upstream down"))
        assert api.wait(submit(api, failing)["id"])["status"] == "FAILURE"
        time.sleep(COOLDOWN_SECONDS + 0.5)

        # When the probe's call fails too (a 502, then its retry refused unsent)
        probing = fake_openai.scenario()
        probing.add(Reply.error(502, "still down"), summary_reply(probing), checklist_reply())
        probe = api.wait(submit(api, probing)["id"])

        # Then the breaker is open again for a whole cool-down: the probe's job and the next
        # fail unsent
        assert (probe["status"], probe["error"]["type"], len(probing.requests)) == (
            "FAILURE", "model_provider_unavailable", 1), probe
        unsent = answered_scenario(fake_openai)
        refused = api.wait(submit(api, unsent)["id"])
        assert (refused["error"]["type"], unsent.requests) == ("model_provider_unavailable", [])


def test_with_redis_out_of_reach_the_breaker_lets_every_call_through(
    api: Api, celery_worker: str, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    # Given a worker whose Redis (CACHE_URL, where the breaker keeps its state) nothing listens
    # on, and a breaker that one failure would open
    out_of_reach = {**BREAKER, "OPENAI_BREAKER_FAILURES": "1", "CACHE_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with jobs_run_by_own_worker(celery_worker, fake_openai, tmp_path, **out_of_reach) as log:
        # When the provider fails a try, then answers
        scenario = fake_openai.scenario()
        scenario.add(Reply.error(500, "upstream hiccup"), summary_reply(scenario), checklist_reply())
        job = api.wait(submit(api, scenario)["id"])

        # Then the job goes on as without a breaker (its retry sent), and the worker says why
        assert (job["status"], len(scenario.requests)) == ("SUCCESS", 3), job
        assert "Model breaker: Redis out of reach" in log.read_text()
