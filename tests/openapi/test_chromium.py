"""The headless browser of the browser tests (tests/openapi/chromium.py) leaves nothing in the
system's temporary folder: each test that drove one left a directory of Chromium's there
(org.chromium.Chromium.*, its singleton socket) at every run."""
from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openapi import chromium

# Not in `make test-fast`: see the README's "Tests".
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    chromium.require_chromium()


@pytest.fixture
def system_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The system's temporary folder, as Chromium (TMPDIR) and this process (tempfile) find it:
    an empty one of this test's. Not under tmp_path, whose path is too long for Chromium's
    socket in it."""
    with tempfile.TemporaryDirectory(prefix="jobapi-tmp-") as directory:
        monkeypatch.setenv("TMPDIR", directory)
        monkeypatch.setattr(tempfile, "tempdir", directory)
        yield Path(directory)


def test_a_browser_a_test_drove_leaves_nothing_in_the_system_temporary_folder(
    tmp_path: Path, system_tmp: Path
) -> None:
    # Given a browser a test drove
    with chromium.DevTools(tmp_path) as browser:
        assert browser.evaluate("1 + 1") == 2

    # When it is closed (the end of its `with`), then it left nothing there
    assert list(system_tmp.iterdir()) == []
