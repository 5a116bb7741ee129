"""The process's outbound HTTP client (postbacks, providers) and how its failures are
classified.

``outbound_client`` is called once per process (``resources.open_resources``); callers
share its connection pool. Importing this module registers the httpx classifier with
``libs.runtime.errors``.
"""

from __future__ import annotations

import httpx

from libs.runtime.errors import register_transient

# Answers that say "not now" rather than "no": a timeout, rate limiting, and a gateway
# or server that is overloaded or restarting.
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})


def outbound_client(*, timeout_s: float = 5.0) -> httpx.AsyncClient:
    """A new pooled client with a timeout on every phase and no redirects followed (a
    provider's redirect is an answer to record, not to chase). The caller closes it."""
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)


@register_transient
def _transient(exc: BaseException) -> bool | None:
    """httpx: the peer could not be reached, timed out, or dropped the connection
    mid-answer; a status raised by ``raise_for_status`` when it is one of
    ``TRANSIENT_STATUSES``. A request we built wrong (a local protocol error, an
    unsupported scheme) or any other status is not transient."""
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return True
    if isinstance(exc, httpx.ProxyError):
        return True
    if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
        return False
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in TRANSIENT_STATUSES
    return None
