"""Webhook nodes' calls: an SSRF guard, the call with its timeout, and the retry rule.

A call is made at least once per effect id (``Idempotency-Key`` header: the receiver
can drop a repeat). Retried, with exponential backoff and jitter (or the server's
``Retry-After``), on network errors, timeouts, 429 and 5xx; any other answer is final.

The guard refuses a URL whose host is, or resolves to, a loopback, private, link-local,
multicast, reserved or unspecified address, unless the platform allows private targets
(``HODHOD_JOURNEY_WEBHOOK_ALLOW_PRIVATE``, for development). It is one function,
``check_target``, to be replaced by the platform-wide guard when there is one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_BACKOFF = timedelta(hours=1)
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class Blocked(ValueError):
    """The target address is not allowed."""


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    retryable: bool
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None

    def outcome(self, exhausted: bool) -> str:
        if self.ok:
            return "ok"
        return "exhausted" if self.retryable and exhausted else "failed"


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def _system_resolve(host: str) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None)})


async def check_target(
    url: str, *, allow_private: bool, resolve: Callable[[str], Sequence[str]] | None = None
) -> None:
    """Raise ``Blocked`` if ``url`` may not be called (see the module doc). Resolution
    runs in a thread (``getaddrinfo`` blocks)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Blocked("only http(s) URLs with a host are called")
    if allow_private:
        return
    host = parts.hostname
    try:
        addresses: Sequence[str] = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = await asyncio.to_thread(resolve or _system_resolve, host)
        except OSError as exc:
            raise Blocked(f"cannot resolve {host}: {exc}") from None
    if not addresses or any(_forbidden(a) for a in addresses):
        raise Blocked(f"{host} is a private, loopback or reserved address")


def backoff(attempt: int, retry_after_s: float | None = None) -> timedelta:
    """The wait before retry ``attempt`` (1, 2, …): the server's ``Retry-After`` if it
    gave one, else 2^attempt seconds with ±25% jitter; at most an hour."""
    if retry_after_s is not None:
        return min(timedelta(seconds=max(retry_after_s, 0.0)), MAX_BACKOFF)
    base = 2.0**attempt
    return min(timedelta(seconds=base * random.uniform(0.75, 1.25)), MAX_BACKOFF)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def call(
    http: httpx.AsyncClient,
    effect_id: str,
    payload: Mapping[str, Any],
    *,
    allow_private: bool,
    resolve: Callable[[str], Sequence[str]] | None = None,
) -> Result:
    """Make one attempt of a stored call; never raises for the target's behaviour."""
    url = str(payload["url"])
    try:
        await check_target(url, allow_private=allow_private, resolve=resolve)
    except Blocked as exc:
        return Result(ok=False, retryable=False, error=str(exc))
    headers = {str(k): str(v) for k, v in dict(payload.get("headers") or {}).items()}
    headers["Idempotency-Key"] = effect_id
    method = str(payload.get("method", "POST"))
    try:
        response = await http.request(
            method,
            url,
            json=None if method == "GET" else payload.get("body"),
            headers=headers,
            timeout=float(payload.get("timeout_s", 5.0)),
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        return Result(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return Result(ok=True, retryable=False, status=response.status_code)
    return Result(
        ok=False,
        retryable=response.status_code in RETRY_STATUSES,
        status=response.status_code,
        error=f"HTTP {response.status_code}",
        retry_after_s=_retry_after(response),
    )


async def call_all(
    http: httpx.AsyncClient,
    calls: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    allow_private: bool,
    resolve: Callable[[str], Sequence[str]] | None = None,
) -> list[Result]:
    """One attempt of each call, concurrently; results in order."""
    return list(
        await asyncio.gather(
            *(call(http, i, p, allow_private=allow_private, resolve=resolve) for i, p in calls)
        )
    )
