"""The docs pages render in a real browser (headless Chromium), from this server alone."""
from __future__ import annotations

import html
import ipaddress
from pathlib import Path

import pytest

from tests.openapi import chromium

# Not in `make test-fast`: see the README's "Two commands".
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    chromium.require_chromium()


def _summaries(spec: dict) -> list[str]:
    operations = [op for item in spec["paths"].values() for op in item.values()]
    operations += [op for item in spec["webhooks"].values() for op in item.values()]
    return [op["summary"] for op in operations]


def _only_this_machine(rendered: chromium.Rendered, origin: str) -> None:
    assert rendered.page_requests, "the net log recorded no request"
    elsewhere = [url for url in rendered.page_requests if not url.startswith(origin + "/")]
    assert elsewhere == [], f"the page loaded from elsewhere: {elsewhere}"
    for address in rendered.connected_to:
        host = address.rsplit(":", 1)[0].strip("[]")
        assert ipaddress.ip_address(host).is_loopback, f"Chromium connected to {address}"


def test_redoc_renders_every_operation_from_this_server_only(
    docs_server: str, committed_spec: dict, tmp_path: Path
) -> None:
    rendered = chromium.render(f"{docs_server}/api/docs/", tmp_path)

    dom = html.unescape(rendered.dom)
    missing = [summary for summary in _summaries(committed_spec) if summary not in dom]
    assert missing == [], f"not rendered: {missing}"
    assert f"{docs_server}/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in (
        rendered.page_requests
    )
    _only_this_machine(rendered, docs_server)


def test_swagger_ui_renders_the_operations_from_this_server_only(
    docs_server: str, committed_spec: dict, tmp_path: Path
) -> None:
    rendered = chromium.render(f"{docs_server}/api/docs/swagger/", tmp_path)

    dom = html.unescape(rendered.dom)
    for summary in ("Submit a job", "Get a job", "List persisted results"):
        assert summary in dom
    _only_this_machine(rendered, docs_server)


def test_redoc_screenshot(docs_server: str, tmp_path: Path) -> None:
    out = tmp_path / "redoc.png"

    chromium.screenshot(f"{docs_server}/api/docs/", out, tmp_path)

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000  # a rendered page, not a blank one
