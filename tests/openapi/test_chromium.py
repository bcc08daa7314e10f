"""The headless browser of the browser tests (tests/openapi/chromium.py) leaves nothing in the
system's temporary folder: each test that drove one left a directory of Chromium's there
(org.chromium.Chromium.*, its singleton socket) at every run."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.openapi import chromium

# Not in `make test-fast`: see the README's "Two commands".
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    chromium.require_chromium()


def test_a_browser_a_test_drove_leaves_nothing_in_the_system_temporary_folder(
    tmp_path: Path, system_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a browser a test drove, where the system's temporary folder is this test's own for
    # Chromium (TMPDIR) and for the helper, which makes Chromium's there (tempfile)
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    with chromium.DevTools(tmp_path) as browser:
        assert browser.evaluate("1 + 1") == 2

    # When it is closed (the end of its `with`), then it left nothing there
    assert list(system_tmp.iterdir()) == []
