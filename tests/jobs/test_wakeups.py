"""A waiting request's wait (jobs/wakeups.py): on a client socket numbered past 1023, as a process
holding many connections hands out (select() took none, FD_SETSIZE, and such a wait ended at
once as if its client had gone), and longer than one poll() takes."""
from __future__ import annotations

import fcntl
import resource
import socket
import uuid
from collections.abc import Iterator

import pytest

from jobs.wakeups import Waiter

# The first descriptor select() cannot take.
PAST_FD_SETSIZE = 1024


@pytest.fixture
def connection_past_fd_setsize() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair: the server's end numbered PAST_FD_SETSIZE or more, and its client's end."""
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = PAST_FD_SETSIZE + 64
    if limits[0] != resource.RLIM_INFINITY and limits[0] < wanted:
        if limits[1] != resource.RLIM_INFINITY and limits[1] < wanted:
            pytest.skip(f"the open-files hard limit ({limits[1]}) is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, limits[1]))
    server_end, client_end = socket.socketpair()
    # The lowest free descriptor from PAST_FD_SETSIZE up.
    high = fcntl.fcntl(server_end.fileno(), fcntl.F_DUPFD_CLOEXEC, PAST_FD_SETSIZE)
    server_end.close()
    server_end = socket.socket(fileno=high)
    try:
        yield server_end, client_end
    finally:
        server_end.close()
        client_end.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def _waiter() -> Waiter:
    return Waiter(client_id=uuid.uuid4(), job_id=uuid.uuid4())


def test_a_wait_whose_client_socket_is_numbered_past_1023_answers_its_event(
    connection_past_fd_setsize: tuple[socket.socket, socket.socket],
) -> None:
    # Given a client, still connected, on a socket numbered past 1023, and its job's event
    server_end, _client_end = connection_past_fd_setsize
    assert server_end.fileno() >= PAST_FD_SETSIZE
    waiter = _waiter()
    try:
        waiter.wake("job.succeeded")

        # When its request waits, Then the wait answers the event (not "gone": its client is there)
        assert waiter.wait(10, server_end) == "event"
    finally:
        waiter.close()


def test_a_wait_whose_client_socket_is_numbered_past_1023_sees_its_client_hang_up(
    connection_past_fd_setsize: tuple[socket.socket, socket.socket],
) -> None:
    # Given a client on a socket numbered past 1023 that hangs up, and no event
    server_end, client_end = connection_past_fd_setsize
    waiter = _waiter()
    try:
        client_end.close()

        # When its request waits, Then the wait ends as the client has gone, well before its timeout
        assert waiter.wait(60, server_end) == "gone"
    finally:
        waiter.close()


def test_a_wait_longer_than_poll_takes_at_once_answers_its_event() -> None:
    # Given a job's event, and a wait of 30 days (API_MAX_WAIT_SECONDS and
    # API_STREAM_HEARTBEAT_SECONDS have no most): poll() takes at most 2**31 - 1 ms (24.8 days),
    # and a longer timeout raised OverflowError, the request's 500, where select() had taken it
    waiter = _waiter()
    try:
        waiter.wake("job.succeeded")

        # When its request waits, Then the wait answers the event
        assert waiter.wait(30 * 24 * 3600) == "event"
    finally:
        waiter.close()
