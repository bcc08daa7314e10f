"""The broker's queues' depths (core/queues.py), as the console shows them: within the broker's
bounds when it does not answer."""
from __future__ import annotations

from core.queues import queue_depths
from tests.conftest import SilentServer


def test_against_a_hung_broker_the_depths_are_unknown_after_one_connection(broker_hung_briefly: SilentServer) -> None:
    # Given the broker's connection timeout set under 2 s (0.5 s: its connect and socket
    # timeouts), and a broker that takes connections and never answers

    # When the console reads the queues' depths
    depths = queue_depths(["jobs", "webhooks"])

    # Then no depth is known, after one connection, which waited out its socket timeout: not a
    # second one 2 s later (3 s in all, the console's request waiting on it)
    assert depths == {"jobs": None, "webhooks": None}
    assert len(broker_hung_briefly.connections) == 1
