"""A small HTTP server for the fake providers: HTTP/1.1 (httptools) and HTTP/2 (h2),
plain or over TLS with ALPN choosing between them, in the running event loop.

Why not uvicorn: a fake must be able to drop a connection mid-request, answer slowly,
and speak HTTP/2 over TLS as APNs and FCM do; and the FCM fake must be lean enough to
answer thousands of requests a second on one core. A handler is an async function of
a ``Request`` answering a ``Response`` or ``DROP`` (the connection is aborted without an
answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools


@dataclass(slots=True)
class Request:
    method: str
    path: str  # with its query string
    headers: dict[str, str]  # lower-case names
    body: bytes
    http_version: str  # "1.1" or "2"
    connection_id: int


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Drop:
    pass


DROP = _Drop()
Handler = Callable[[Request], Awaitable[Response | _Drop]]

REASONS = {
    200: b"OK",
    201: b"Created",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    410: b"Gone",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class _Http1(asyncio.Protocol):
    def __init__(self, server: FakeServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._url = b""
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._id = server._next_connection()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self._server._connections.add(self._transport)
        self._worker = asyncio.get_running_loop().create_task(self._work())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server._connections.discard(self._transport)
        self._queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers, self._body, self._url = {}, [], b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._queue.put_nowait(
            Request(
                self._parser.get_method().decode(),
                self._url.decode("latin-1"),
                self._headers,
                b"".join(self._body),
                "1.1",
                self._id,
            )
        )

    async def _work(self) -> None:
        # One request at a time per connection, in order (HTTP/1.1 without pipelining).
        while (request := await self._queue.get()) is not None:
            answer = await self._server._answer(request)
            transport = self._transport
            if transport is None or transport.is_closing():
                return
            if isinstance(answer, _Drop):
                transport.abort()
                return
            head = [
                b"HTTP/1.1 %d %s\r\n" % (answer.status, REASONS.get(answer.status, b"Status")),
                b"content-length: %d\r\n" % len(answer.body),
            ]
            for name, value in answer.headers.items():
                head.append(f"{name}: {value}\r\n".encode("latin-1"))
            head.append(b"\r\n")
            transport.write(b"".join(head) + answer.body)


class _Http2(asyncio.Protocol):
    def __init__(self, server: FakeServer) -> None:
        self._server = server
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, tuple[dict[str, str], list[bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._id = server._next_connection()
        # Sends waiting for the peer's flow-control window to open.
        self._pending: dict[int, tuple[bytes, asyncio.Event]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self._server._connections.add(self._transport)
        self._conn.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server._connections.discard(self._transport)
        for task in self._tasks:
            task.cancel()
        for _, event in self._pending.values():
            event.set()

    def _flush(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            assert self._transport is not None
            self._transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = {str(k).lower(): str(v) for k, v in event.headers}
                self._streams[event.stream_id] = (headers, [])
            elif isinstance(event, h2.events.DataReceived):
                if event.stream_id in self._streams:
                    self._streams[event.stream_id][1].append(event.data)
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self._streams.pop(event.stream_id, None)
                if stream is not None:
                    task = asyncio.get_running_loop().create_task(
                        self._respond(event.stream_id, *stream)
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id, (_, ready) in list(self._pending.items()):
                    if event.stream_id in (0, stream_id):
                        ready.set()
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id, None)
        self._flush()

    async def _respond(self, stream_id: int, headers: dict[str, str], body: list[bytes]) -> None:
        request = Request(
            headers.get(":method", ""),
            headers.get(":path", ""),
            {k: v for k, v in headers.items() if not k.startswith(":")},
            b"".join(body),
            "2",
            self._id,
        )
        answer = await self._server._answer(request)
        if self._transport is None or self._transport.is_closing():
            return
        if isinstance(answer, _Drop):
            self._transport.abort()
            return
        try:
            self._conn.send_headers(
                stream_id,
                [
                    (":status", str(answer.status)),
                    ("content-length", str(len(answer.body))),
                    *answer.headers.items(),
                ],
                end_stream=not answer.body,
            )
            data = answer.body
            while data:
                window = min(
                    self._conn.local_flow_control_window(stream_id),
                    self._conn.max_outbound_frame_size,
                )
                if window <= 0:
                    ready = asyncio.Event()
                    self._pending[stream_id] = (data, ready)
                    self._flush()
                    await ready.wait()
                    self._pending.pop(stream_id, None)
                    continue
                chunk, data = data[:window], data[window:]
                self._conn.send_data(stream_id, chunk, end_stream=not data)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self._flush()


class _Alpn(asyncio.Protocol):
    """Picks HTTP/2 or HTTP/1.1 once the TLS handshake has chosen a protocol."""

    def __init__(self, server: FakeServer) -> None:
        self._server = server
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sslobj = transport.get_extra_info("ssl_object")
        chosen = sslobj.selected_alpn_protocol() if sslobj is not None else None
        wants_h2 = chosen == "h2" or (chosen is None and self._server.h2_prior_knowledge)
        self._inner = _Http2(self._server) if wants_h2 else _Http1(self._server)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self._inner is not None
        self._inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)


class FakeServer:
    """Serves ``handler`` on 127.0.0.1 (a free port) until ``stop``.

    ``tls``: a server SSLContext (ALPN offers h2 when ``http2``); without it the
    server speaks HTTP/1.1, or HTTP/2 with prior knowledge when ``h2_prior_knowledge``.
    ``connections_seen`` counts the connections ever accepted (pooling tests).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        tls: ssl.SSLContext | None = None,
        http2: bool = False,
        h2_prior_knowledge: bool = False,
    ) -> None:
        self._handler = handler
        self._tls = tls
        self.h2_prior_knowledge = h2_prior_knowledge
        if tls is not None:
            tls.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Transport] = set()
        self.connections_seen = 0
        self.port = 0

    def _next_connection(self) -> int:
        self.connections_seen += 1
        return self.connections_seen

    async def _answer(self, request: Request) -> Response | _Drop:
        try:
            return await self._handler(request)
        except Exception as exc:  # a bug in a fake must be seen by the test, not hang it
            return Response(500, f"fake handler failed: {exc!r}".encode())

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakeServer:
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            if self._tls is not None:
                return _Alpn(self)
            return _Http2(self) if self.h2_prior_knowledge else _Http1(self)

        self._server = await loop.create_server(
            factory, "127.0.0.1", port, ssl=self._tls, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_connections(self) -> None:
        """Abort every open connection (a provider restarting, a load balancer's reset)."""
        for transport in list(self._connections):
            transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_connections()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
