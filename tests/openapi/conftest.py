"""Fixtures for the spec's proofs: the committed spec, and a real server (gunicorn, DEBUG off)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import yaml

from tests.openapi.web import REPO, start_web, stop

SCHEMA_FILE = REPO / "openapi" / "schema.yaml"


@pytest.fixture(scope="session")
def committed_spec() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text())


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server for the docs pages and the spec (they touch no database)."""
    process, url = start_web(dict(os.environ), tmp_path_factory.mktemp("docs-server"))
    yield url
    stop(process)
