"""The API's gunicorn worker's base (gunicorn_worker.py): gunicorn's threaded worker, a connection
it does not keep closed by the thread that answered on it, not by the process's main loop.

gunicorn closes a connection it will not keep (every answered one at the default, where
gunicorn.conf.py's worker_connections keeps none alive; WEB_MAX_CONNECTIONS above WEB_THREADS
keeps some) as RFC 9112 section 9.6 asks, so that the kernel sends no
reset that cuts the answer's end off: it sends its FIN, then reads what the client still sends
until the client hangs up, for 2 s at most (util.close_graceful). gunicorn 27 did that on the
process's main loop, which accepts connections and hands them to the threads: while it waited,
the process took no other connection. A client that asked `/healthz` and never hung up cost
every client of the process 2 s; 16 of them about 20 s, and 230 stopped the loop past
WEB_TIMEOUT_SECONDS, and gunicorn killed the process with every request and stream it held.

Closed in the request's own thread, the wait holds that thread and the connection's place (the
connection counts against WEB_MAX_CONNECTIONS until it is closed) and nothing else: a flood of
such clients holds WEB_THREADS threads for 2 s each at most, as a connection that sends nothing
holds one for 5 s (gunicorn's wait for a request's first bytes) before going back to the loop.

gunicorn's master imports this module before Django is set up: it imports gunicorn alone."""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class ThreadClosingWorker(ThreadWorker):
    """gunicorn's ThreadWorker, a connection it does not keep closed, its linger too, in the
    thread that served it (tests/test_gunicorn_connections.py)."""

    def handle(self, conn: Any) -> Any:
        """gunicorn's, and the connection closed here, in this thread, when gunicorn would close
        it: every end of a request's (an answer sent, the client gone, an error answered, an event
        stream ended, its client timed out writing to), one gunicorn closed already (a stream
        that failed after its headers went out) left as it is."""
        keep = super().handle(conn)
        if not keep and conn.sock.fileno() != -1:
            conn.close(graceful=True)
        return keep

    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        """gunicorn's, on the main loop, for a connection still open (kept alive, or back to wait
        for its first bytes); one closed in its thread (handle) is only counted gone, once:
        gunicorn's own would try closing it again, fail on the closed socket and count it gone a
        second time, after which the process took a connection more than WEB_MAX_CONNECTIONS."""
        if conn.sock.fileno() == -1:
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)
