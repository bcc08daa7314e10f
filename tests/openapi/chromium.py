"""Headless Chromium (Debian's package) for the docs pages: render, record the network, screenshot;
and `DevTools`, a browser a test drives step by step (the admin's login).

The browser is kept off the network: every host name resolves to nothing and every connection
that is not to loopback goes to a closed local proxy port, so neither the page nor Chromium's
own background services can reach beyond this machine. Its net log tells what was requested.

`python -m tests.openapi.chromium docs/redoc.png` starts a server and writes the README's
screenshot of /api/docs/.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

# How long the page's JavaScript may run (virtual time, so a slow machine does not cut it short).
RENDER_BUDGET_MS = 30_000


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> None:
    """Skip the calling test without Chromium, or fail it on CI (where .ci/run installs it)."""
    if chromium_path() is None:
        message = "chromium is not installed (.ci/run installs it: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _command(binary: str, profile: Path) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        # Nothing leaves the machine: no DNS, and non-loopback traffic to a closed local port.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        f"--virtual-time-budget={RENDER_BUDGET_MS}",
    ]


def _temporary_folder() -> tempfile.TemporaryDirectory[str]:
    """Chromium's temporary folder (its TMPDIR), which its caller removes once the browser is
    gone: Chromium keeps its singleton socket in a directory of the system's
    (org.chromium.Chromium.*), which a browser killed leaves there. Not under the test's
    `work_dir`: the socket's path would be longer than a Unix socket's may be (108 bytes), and
    Chromium would not start."""
    return tempfile.TemporaryDirectory(prefix="jobapi-chromium-")


@dataclass
class Rendered:
    dom: str
    # URLs the page itself asked for (documents, scripts, styles, fonts, images, fetches).
    page_requests: list[str]
    # Every address Chromium opened a TCP connection to, the page's and its own.
    connected_to: list[str]


def _read_net_log(path: Path, origin: str) -> tuple[list[str], list[str]]:
    log = json.loads(path.read_text())
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    page_requests, connected_to = [], []
    for event in log["events"]:
        name, params = names.get(event["type"]), event.get("params", {})
        if name == "URL_REQUEST_START_JOB" and "url" in params:
            # The top-level navigation has no initiator; the page's own loads carry its origin.
            if params.get("initiator") == origin or params["url"].startswith(origin):
                page_requests.append(params["url"])
        elif name == "TCP_CONNECT_ATTEMPT" and "address" in params:
            connected_to.append(params["address"])
    return page_requests, connected_to


def render(url: str, work_dir: Path) -> Rendered:
    """Load `url`, let its JavaScript run, and return the resulting DOM and network record."""
    binary = chromium_path()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    net_log = work_dir / "net-log.json"
    with _temporary_folder() as temporary:
        completed = subprocess.run(
            [*_command(binary, work_dir / "profile"), f"--log-net-log={net_log}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, "TMPDIR": temporary},
        )
    if completed.returncode != 0:
        raise RuntimeError(f"chromium failed ({completed.returncode}): {completed.stderr[-2000:]}")
    parts = urlsplit(url)
    page_requests, connected_to = _read_net_log(net_log, f"{parts.scheme}://{parts.netloc}")
    return Rendered(completed.stdout, page_requests, connected_to)


def screenshot(url: str, out: Path, work_dir: Path, size: str = "1440,1000") -> None:
    binary = chromium_path()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    with _temporary_folder() as temporary:
        completed = subprocess.run(
            [*_command(binary, work_dir / "profile-shot"), f"--window-size={size}",
             f"--screenshot={out}", url],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, "TMPDIR": temporary},
        )
    if completed.returncode != 0 or not out.exists():
        raise RuntimeError(f"chromium screenshot failed: {completed.stderr[-2000:]}")


class DevTools:
    """Chromium driven over `--remote-debugging-pipe`: the DevTools protocol as NUL-separated
    JSON on the browser's file descriptors 3 (commands) and 4 (answers and events), so a test
    can fill a form and read cookies with no client library."""

    def __init__(self, work_dir: Path) -> None:
        binary = chromium_path()
        if binary is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        command = [arg for arg in _command(binary, work_dir / "profile-devtools")
                   if not arg.startswith("--virtual-time-budget")]
        to_browser, from_test = os.pipe()
        from_browser, to_test = os.pipe()

        def on_fds_3_and_4() -> None:
            # Copies above 4 first, so neither dup2 overwrites the other's source.
            read_end, write_end = os.dup(to_browser), os.dup(to_test)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self._temporary = _temporary_folder()
        self._process = subprocess.Popen(
            [*command, "--remote-debugging-pipe", "about:blank"],
            close_fds=False, preexec_fn=on_fds_3_and_4,  # noqa: PLW1509 (no threads start it)
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": self._temporary.name},
        )
        os.close(to_browser)
        os.close(to_test)
        self._out, self._in = os.fdopen(from_test, "wb", 0), os.fdopen(from_browser, "rb", 0)
        self._last_id, self._buffer = 0, b""
        # The events that arrived meanwhile (console messages, exceptions, log entries...).
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command (to the page once attached) and return its result."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if getattr(self, "_session", None):
            message["sessionId"] = self._session
        self._out.write(json.dumps(message).encode() + b"\0")
        while True:  # events arrive in between: kept in self.events
            while b"\0" not in self._buffer:
                chunk = self._in.read(65536)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if "method" in reply and "id" not in reply:
                self.events.append(reply)
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not get there: {self.evaluate('location.href')}")
            time.sleep(0.1)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(lambda: self.evaluate("location.href") == url
                      and self.evaluate("document.readyState") == "complete")

    def close(self) -> None:
        self._process.kill()
        self._process.wait()
        self._out.close()
        self._in.close()
        self._temporary.cleanup()

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def admin_signed_in(browser: DevTools, url: str, landing: str, *, password: str,
                    forget_login_page: bool = False) -> None:
    """Signs the admin's user `operator` in through its login form, and waits for `landing` (the
    login's `next`) to have loaded; the login page's own events forgotten if asked."""
    browser.open(f"{url}/admin/login/?next={landing}")
    if forget_login_page:
        browser.events.clear()
    browser.evaluate(
        "document.querySelector('#id_username').value = 'operator';"
        f"document.querySelector('#id_password').value = {password!r};"
        "document.querySelector('#login-form').submit()"
    )
    browser.wait_for(lambda: browser.evaluate("location.pathname") == landing
                     and browser.evaluate("document.readyState") == "complete")


def page_errors(events: list[dict[str, Any]]) -> list[Any]:
    """What the browser's console would show as errors: uncaught exceptions, console.error,
    and failed loads (a missing asset, a refused fetch)."""
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(params["exceptionDetails"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(params["args"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            # The admin's login page (not the console, which names its icon) asks for a
            # favicon the service does not have; that answer can arrive after the console's.
            if not params["entry"].get("url", "").endswith("/favicon.ico"):
                found.append(params["entry"])
    return found


def main(out: str) -> None:
    from tests.openapi.web import start_web, stop

    with tempfile.TemporaryDirectory() as tmp:
        process, base_url = start_web(dict(os.environ), Path(tmp))
        try:
            screenshot(f"{base_url}/api/docs/", Path(out).resolve(), Path(tmp), size="1440,1100")
        finally:
            stop(process)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/redoc.png")
