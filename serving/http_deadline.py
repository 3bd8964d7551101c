"""uvicorn's h11 protocol with a deadline for each request's head (its request line and headers),
for the servers that answer inference: the front door (routing) and the replicas.

uvicorn has no header timeout: its `timeout_keep_alive` is armed only once a response has been
sent, and every byte that arrives cancels it, so a client that connects and sends nothing, or
trickles a header a byte at a time (slowloris), holds its connection open for ever. Here a
connection on which the app is not working must deliver a whole request head within `seconds` of
connecting or of its previous answer, or it is closed. h11 bounds the head's size
(h11_max_incomplete_event_size), and each app bounds the time its body may take.

Subclassing uvicorn's protocol reaches into its internals (`cycle`, `on_response_complete`), which
requirements.txt pins; the alternative, a server with a header timeout of its own, would be a
second ASGI server beside uvicorn for one setting.
"""

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadDeadlineH11(H11Protocol):
    head_seconds = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._head_timer = None
        self._await_head()

    def connection_lost(self, exc):
        self._cancel_head()
        super().connection_lost(exc)

    def handle_events(self):
        super().handle_events()
        if self._working():  # a whole head arrived: the app has the request now
            self._cancel_head()

    def on_response_complete(self):
        super().on_response_complete()  # may start on a pipelined request at once
        if not self.transport.is_closing() and not self._working():
            self._await_head()

    def _working(self):
        return self.cycle is not None and not self.cycle.response_complete

    def _await_head(self):
        self._cancel_head()
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_overdue)

    def _cancel_head(self):
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self):
        self._head_timer = None
        if not self._working() and not self.transport.is_closing():
            self.transport.close()


def with_head_deadline(seconds):
    """The protocol class to give uvicorn (`http=`): a request head must arrive within `seconds`."""
    return type("HeadDeadlineH11", (HeadDeadlineH11,), {"head_seconds": float(seconds)})
