"""uvicorn's h11 HTTP/1.1 protocol with read timeouts, against clients that send slowly or not at all.

uvicorn bounds only the idle time between requests (`timeout_keep_alive`); a client that sends its headers or its
body a byte at a time holds its connection (and, under `limit_concurrency`, a slot) for as long as it likes. Here
each connection must deliver a request's headers within `header_timeout_s` of connecting (or of the previous
response) and its whole body within `body_timeout_s` of the headers; otherwise the connection is closed (with a
408 when nothing has been answered yet). The timers run on the event loop: no thread per connection.

Timeouts come from the class attributes (`with_timeouts` makes a subclass) or, for the worker processes of
`bertkit serve --workers N`, which build their protocol from a class name, from the serve settings that
`bertkit serve` puts in the environment.
"""

from __future__ import annotations

import functools
import json
import os

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

CONFIG_ENV = "BERTKIT_SERVE_CONFIG"
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 15.0


def _from_env(key: str, default: float) -> float:
    return float(_env_settings(os.environ.get(CONFIG_ENV, "")).get(key, default))


@functools.lru_cache(maxsize=4)
def _env_settings(raw: str) -> dict:
    """The serve settings in the environment (parsed once per process, not per connection)."""
    return json.loads(raw).get("settings", {}) if raw else {}


class GuardedH11Protocol(H11Protocol):
    header_timeout_s: float | None = None  # None: the serve settings in the environment, else the default
    body_timeout_s: float | None = None

    @classmethod
    def with_timeouts(cls, header_timeout_s: float, body_timeout_s: float) -> type[GuardedH11Protocol]:
        return type("GuardedH11Protocol", (cls,), {"header_timeout_s": header_timeout_s,
                                                   "body_timeout_s": body_timeout_s})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_s = self.header_timeout_s if self.header_timeout_s is not None else \
            _from_env("header_timeout_s", DEFAULT_HEADER_TIMEOUT_S)
        self._body_s = self.body_timeout_s if self.body_timeout_s is not None else \
            _from_env("body_timeout_s", DEFAULT_BODY_TIMEOUT_S)
        self._read_timer = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm(self._header_s)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        was_waiting_for_headers = self.conn.their_state is h11.IDLE
        super().handle_events()
        if self.transport.is_closing():
            self._disarm()
        elif was_waiting_for_headers and self.conn.their_state is h11.SEND_BODY:
            self._arm(self._body_s)  # headers in: now the body's clock
        elif self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self._disarm()  # the request is in; the application's own deadline takes over

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            # keep-alive: the next request's headers are due in time too
            self._arm(self._header_s)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        phase = "headers" if self.conn.their_state is h11.IDLE else "body"
        self.logger.info("closing a connection that sent its request %s too slowly", phase)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE) and (self.cycle is None or
                                                                     not self.cycle.response_started):
            try:  # tell the client why, when nothing has been answered yet
                self.transport.write(self._timeout_response(phase))
            except Exception:  # the socket may be gone already
                pass
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application sees http.disconnect
            self.cycle.message_event.set()
        self.transport.close()

    @staticmethod
    def _timeout_response(phase: str) -> bytes:
        body = json.dumps({"error": f"request {phase} not received in time"}).encode()
        return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
