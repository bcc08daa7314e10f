"""Callback URLs at submission: every refused URL answers 400 saying why (an IP literal, what kind of
address it is; a host name, only that it must resolve to public addresses)."""
from __future__ import annotations

import json
import socket
from collections.abc import Sequence

import pytest

from core import http
from tests.conftest import Api
from tests.webhooks.conftest import HELLO

# Names the injected resolver knows; everything else "does not resolve" (no DNS in tests).
NAMES = {
    "private.example": ["10.20.30.40"],
    "metadata.example": ["169.254.169.254"],
    "v6private.example": ["fd00::1"],
    "mixed.example": ["93.184.216.34", "192.168.1.10"],
    "loopback6.example": ["::1"],
}


# What a refused name is told, whether it resolves to a non-public address or not at all.
NOT_PUBLIC = "must resolve to public addresses only"


def fake_resolve(host: str, port: int) -> Sequence[str]:
    if host not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return NAMES[host]


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    # The live server runs in this process, so submission resolves through the fake.
    monkeypatch.setattr(http, "DEFAULT_RESOLVER", fake_resolve)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://10.0.0.1/hook", "private"),
        ("http://172.16.5.4/hook", "private"),
        ("http://192.168.0.10:8080/hook", "private"),
        ("http://[fc00::1]/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.10.10/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fec0::1]/", "site-local"),
        ("http://[::1]:8000/", "loopback"),  # ::1 is outside the allowed 127.0.0.0/8
        ("http://224.0.0.251/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://[::ffff:192.168.0.1]/", "private"),
        ("http://100.64.0.1/", "address"),
        ("http://private.example/hook", NOT_PUBLIC),
        ("http://metadata.example/", NOT_PUBLIC),
        ("https://v6private.example/", NOT_PUBLIC),
        ("https://mixed.example/", NOT_PUBLIC),
        ("http://loopback6.example/", NOT_PUBLIC),
        ("http://nowhere.invalid/", NOT_PUBLIC),
        ("ftp://example.com/", "http and https"),
        ("http://user:pass@127.0.0.1/", "credentials"),
        ("http://127.0.0.1/\u0001", "control characters"),
        ("http://127.0.0.1:70000/", "port"),
    ],
)
def test_refused_callback_urls_answer_400_saying_why(
    api: Api, no_dns: None, url: str, words: str
) -> None:
    response = api.post("/api/jobs/", json={"job_name": HELLO, "payload": {}, "callback_url": url})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_callback_url"
    assert words in error["message"]
    assert error["details"]["callback_url"]


def test_a_refused_name_does_not_say_what_it_resolved_to(api: Api, no_dns: None) -> None:
    # A client must not map the names of the service's own network through the refusals.
    response = api.post("/api/jobs/", json={"job_name": HELLO, "payload": {},
                                            "callback_url": "http://private.example/hook"})

    assert response.status_code == 400
    assert "10.20.30.40" not in response.text


def test_a_name_of_a_private_network_is_refused_as_a_name_that_does_not_resolve(api: Api, no_dns: None) -> None:
    # A client must not learn which names the service's own network has (`postgres`, the
    # metadata host) from which refusal it gets: one that resolves privately and one that does
    # not resolve at all answer the same, the host name aside.
    def refusal(host: str) -> dict[str, object]:
        response = api.post("/api/jobs/", json={"job_name": HELLO, "payload": {},
                                                "callback_url": f"http://{host}/hook"})
        assert response.status_code == 400, response.text
        return json.loads(response.text.replace(host, "HOST"))

    nowhere = refusal("nowhere.invalid")

    for host in ("private.example", "metadata.example", "v6private.example", "mixed.example", "loopback6.example"):
        assert refusal(host) == nowhere


def test_the_allowed_network_is_accepted(api: Api, no_dns: None) -> None:
    # 127.0.0.0/8 is in WEBHOOK_ALLOWED_NETWORKS for the tests; nothing listens on this port.
    response = api.post(
        "/api/jobs/",
        json={"job_name": HELLO, "payload": {}, "callback_url": "http://127.0.0.1:9/hook"},
    )

    assert response.status_code == 202, response.text


def test_validation_accepts_public_hosts_international_names_and_ports() -> None:
    from webhooks.addresses import callback_url_validate

    def public(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    # Checked only (no job is submitted: nothing may send traffic to a public address).
    callback_url_validate(url="https://hooks.example.com:8443/in?x=1", resolver=public)
    callback_url_validate(url="https://bücher.example/hook", resolver=public)
    callback_url_validate(url="http://[2606:4700:4700::1111]:8080/", resolver=public)
