"""The FastAPI app factory every HTTP service uses.

``create_app`` wires the parts every service shares: ``/healthz`` (alive), ``/readyz``
(the service's own dependencies answer), ``/metrics``, request ids, a request body
limit, access metrics, and one error handler that answers every failure with
``{"error": {"code", "message", "field"}}`` — 4xx for bad input, never a 5xx for it.

A service may also declare ``FastRoute``s: ``GET`` routes answered ahead of FastAPI's
routing and the middleware chain (the tracker's redirects, where that chain cost more
than the handler). The app keeps their request ids and access metrics.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.runtime import metrics
from libs.runtime.errors import HodhodError, is_transient
from libs.runtime.logging import request_id_var
from libs.schemas.base import error_field

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
# A whole answer: status, raw headers (lower-case names) and body.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status)


def client_ip(request: Request, *, trust_forwarded_for: bool, hops: int = 1) -> str | None:
    """The client's address. Behind proxies (``trust_forwarded_for``), the address the
    outermost of ``hops`` trusted proxies saw: the ``hops``-th entry of
    ``X-Forwarded-For`` from the right — each proxy appends what it saw, and anything to
    the left of that the client itself may have written. Otherwise (or when the header
    is missing, short or garbled there), the peer."""
    return forwarded_client_ip(
        request.headers.get("x-forwarded-for"),
        request.client.host if request.client else None,
        trust_forwarded_for=trust_forwarded_for,
        hops=hops,
    )


def forwarded_client_ip(
    forwarded_for: str | None, peer: str | None, *, trust_forwarded_for: bool, hops: int = 1
) -> str | None:
    """``client_ip`` from its parts: the first ``X-Forwarded-For`` header (or None) and
    the peer's address (or None); for paths that read the ASGI scope themselves."""
    if trust_forwarded_for:
        entries = (forwarded_for or "").split(",")
        if len(entries) >= hops:
            chosen = entries[-hops].strip()
            if chosen and len(chosen) <= 64 and chosen.isprintable():
                return chosen
    return peer


@dataclass(frozen=True)
class FastRoute:
    """``GET <prefix><segment>`` (one non-empty path segment) answered ahead of FastAPI's
    routing and the middleware chain, by ``handler(scope, segment)`` returning the whole
    answer. For a hot path whose handler is cheaper than that chain; keep a FastAPI
    route at ``template`` too (the same handler) so OpenAPI lists it and a request the
    fast path does not take (another method, a body, a root path) gets what it got.

    The app adds what the middleware chain adds: the ``X-Request-Id`` header (and the
    log context), access metrics labelled ``template``, and the error envelope of an
    unexpected failure. Not applied: FastAPI's own telemetry middleware.
    """

    prefix: str  # "/c/": a single leading path segment, slashes on both sides
    template: str  # "/c/{token}": the route label of the access metrics
    handler: Callable[[Scope, str], Awaitable[Answer]]

    def __post_init__(self) -> None:
        prefix = self.prefix
        if len(prefix) < 3 or prefix[0] != "/" or prefix[-1] != "/" or prefix.count("/") != 2:
            raise ValueError(f"a fast route prefix is one segment, like '/c/': {self.prefix!r}")


def answer_response(answer: Answer) -> Response:
    """A Starlette response sending ``answer`` as it is (for the FastAPI twin of a
    ``FastRoute``)."""
    status, headers, body = answer
    response = Response(body, status_code=status)
    response.raw_headers = list(headers)
    return response


class App(FastAPI):
    """FastAPI, plus ``FastRoute``s dispatched before anything else (see ``FastRoute``).

    A request takes the fast path only when it is a plain ``GET`` whose path is a fast
    route's prefix and one segment, with no NUL, no declared body and no root path;
    everything else — other methods (405), deeper paths (404), bodies (413) — goes
    through FastAPI and the middleware chain exactly as before.
    """

    def __init__(self, *, fast_routes: Sequence[FastRoute] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_routes = {route.prefix: route for route in fast_routes}
        if len(self.fast_routes) != len(fast_routes):
            raise ValueError("two fast routes share a prefix")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_routes and scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            cut = path.find("/", 1) + 1
            route = self.fast_routes.get(path[:cut]) if cut else None
            if route is not None and not (scope.get("root_path") or self.root_path):
                segment = path[cut:]
                if segment and "/" not in segment and "\x00" not in segment:
                    incoming = None
                    for name, value in scope["headers"]:
                        if name == b"x-request-id":
                            incoming = value  # the last one, as RequestIdMiddleware
                        elif name == b"content-length":
                            break  # a body: the body limit decides
                    else:
                        scope["app"] = self
                        await self._answer_fast(route, segment, incoming, scope, receive, send)
                        return
        await super().__call__(scope, receive, send)

    async def _answer_fast(
        self,
        route: FastRoute,
        segment: str,
        incoming: bytes | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        started = time.perf_counter()
        request_id = request_id_of(incoming)
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        context = request_id_var.set(request_id)
        context_live = True
        status = 500
        responded = False
        try:
            status, headers, body = await route.handler(scope, segment)
            responded = True
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*headers, (b"x-request-id", request_id.encode("latin-1"))],
                }
            )
            await send({"type": "http.response.body", "body": body})
        except Exception as exc:
            request_id_var.reset(context)
            context_live = False
            _observe_access(route.template, status, time.perf_counter() - started)
            # What the chain does: the app's error handler answers unless the answer had
            # started, and the server sees the exception.
            if not responded:
                await self._answer_unexpected(exc, scope, receive, send)
            raise
        finally:
            if context_live:
                request_id_var.reset(context)
        _observe_access(route.template, status, time.perf_counter() - started)

    async def _answer_unexpected(
        self, exc: Exception, scope: Scope, receive: Receive, send: Send
    ) -> None:
        handler = self.exception_handlers.get(Exception) or self.exception_handlers.get(500)
        response: Any
        if handler is None:
            response = Response("Internal Server Error", 500, media_type="text/plain")
        else:
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)


# Access-metric children by (route template, status) for the fast routes: resolving
# labels takes a lock and a dict lookup per request otherwise.
_ACCESS: dict[tuple[str, int], tuple[Any, Any]] = {}


def _observe_access(template: str, status: int, seconds: float) -> None:
    children = _ACCESS.get((template, status))
    if children is None:
        children = _ACCESS[(template, status)] = (
            metrics.HTTP_REQUESTS.labels(template, "GET", f"{status // 100}xx"),
            metrics.HTTP_SECONDS.labels(template, "GET"),
        )
    children[0].inc()
    children[1].observe(seconds)


# Where the request's id is kept in the ASGI scope, for the error handler that runs
# after the request-id middleware has unwound.
REQUEST_ID_SCOPE_KEY = "hodhod.request_id"


def request_id_of(incoming: bytes | None) -> str:
    """The caller's ``X-Request-Id`` when printable (cut to 64 characters), else a new one."""
    given = (incoming or b"").decode("latin-1")
    return given[:64] if given.isprintable() and given else uuid.uuid4().hex


def create_app(
    *,
    title: str,
    routers: Sequence[APIRouter],
    lifespan: Lifespan | None = None,
    readiness: dict[str, ReadinessCheck] | None = None,
    max_body_bytes: int = 1_048_576,
    fast_routes: Sequence[FastRoute] = (),
) -> FastAPI:
    """Build the app. Nothing is connected here: ``lifespan`` creates engines and clients.

    ``readiness`` may be filled in by ``lifespan`` (``app.state.readiness``) once the
    dependencies exist; ``/readyz`` answers 503 naming the checks that failed.
    """
    app = App(
        title=title,
        lifespan=lifespan,
        default_response_class=JSONResponse,
        fast_routes=fast_routes,
    )
    app.state.readiness = dict(readiness or {})
    for router in routers:
        app.include_router(router)
    _add_probes(app)
    _add_error_handlers(app)
    app.add_middleware(AccessMetricsMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app


def _add_probes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, ReadinessCheck] = request.app.state.readiness
        results = {name: await check() for name, check in checks.items()}
        status = 200 if all(results.values()) else 503
        return JSONResponse(
            {"status": "ready" if status == 200 else "not_ready", "checks": results},
            status_code=status,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _field_of(loc: Sequence[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HodhodError)
    async def domain_error(_: Request, exc: HodhodError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return error_response(400, "malformed_json", "request body is not valid JSON")
        loc_field, message = error_field(first)
        field = _field_of((loc_field or "").split(".")) if loc_field else None
        return error_response(422, "invalid", f"{field}: {message}" if field else message, field)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Reached only by failures that are not the caller's: a store or the broker down
        # (503, retry later) or a bug (500). The envelope and the X-Request-Id header carry
        # the request id to quote. Starlette runs this handler outermost, after the
        # request-id middleware has unwound: the id comes from the scope it left.
        request_id = request.scope.get(REQUEST_ID_SCOPE_KEY) or request_id_var.get()
        if is_transient(exc):
            log.warning(
                "dependency unavailable",
                extra={"error": repr(exc)[:500], "request_id": request_id},
            )
            answer = error_response(
                503, "unavailable", f"a dependency is unavailable; retry (request {request_id})"
            )
        else:
            log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
            answer = error_response(500, "internal", f"internal error (request {request_id})")
        if request_id is not None:
            answer.headers["x-request-id"] = request_id
        return answer

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))


class RequestIdMiddleware:
    """Take ``X-Request-Id`` from the caller (bounded) or make one; echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(dict(scope["headers"]).get(b"x-request-id"))
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """Answer 413 before reading a body larger than the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            await _send_json(send, 400, error_body("invalid_path", "the path contains NUL"))
            return
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(
                send, 413, error_body("payload_too_large", f"request body exceeds {limit} bytes")
            )
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await _send_json(
                    send,
                    413,
                    error_body("payload_too_large", f"request body exceeds {limit} bytes"),
                )


class _BodyTooLarge(Exception):
    pass


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class AccessMetricsMiddleware:
    """Count and time requests by route template (bounded labels), not raw path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            metrics.HTTP_REQUESTS.labels(template, method, f"{status // 100}xx").inc()
            metrics.HTTP_SECONDS.labels(template, method).observe(time.perf_counter() - started)
