"""Outbound HTTP for the providers: pooled clients and the one place that turns a
transport failure into an Outcome."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpx

from services.dispatcher.providers.base import NETWORK, TIMEOUT, Outcome, failed


@dataclass(frozen=True, slots=True)
class HttpOptions:
    """How providers reach the network: the timeout of one call, the pool's size, and
    an extra CA bundle to trust (a test's self-signed certificate, a corporate proxy's
    CA) on top of the system's."""

    timeout_s: float = 10.0
    max_connections: int = 100
    ca_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context


def client(options: HttpOptions, *, http2: bool) -> httpx.AsyncClient:
    """A pooled client; with ``http2`` it negotiates HTTP/2 by ALPN over TLS (one
    connection multiplexes many sends) and falls back to HTTP/1.1 elsewhere."""
    return httpx.AsyncClient(
        http2=http2,
        verify=options.ssl_context(),
        timeout=httpx.Timeout(options.timeout_s, connect=min(5.0, options.timeout_s)),
        limits=httpx.Limits(
            max_connections=options.max_connections,
            max_keepalive_connections=options.max_connections,
            keepalive_expiry=60.0,
        ),
        follow_redirects=False,
        trust_env=False,
    )


def transport_failure(provider: str, exc: httpx.HTTPError) -> Outcome:
    """The Outcome of a call that got no HTTP answer. Both are transient: a timeout may
    mean the provider did send it (receipts say so in ``error``)."""
    if isinstance(exc, httpx.TimeoutException):
        return failed(
            provider, TIMEOUT, f"no answer in time ({type(exc).__name__})", transient=True
        )
    return failed(provider, NETWORK, f"connection failed ({type(exc).__name__})", transient=True)
