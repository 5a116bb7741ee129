"""Keep provider secrets out of the logs written by the HTTP and mail libraries.

Kavenegar puts the API key in the URL path and a generic gateway may put its token in
the URL or a header; httpx logs every request's URL at INFO. Each provider registers
the secrets it holds, and a filter on the third-party loggers replaces them with
``***`` in any record before a handler sees it. Our own code never logs a secret in
the first place (the log-capture test checks both).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

MIN_SECRET = 6
LOGGERS = ("httpx", "httpcore", "aiosmtplib", "google.auth", "urllib3", "hpack", "h2")

_secrets: set[str] = set()
_lock = threading.Lock()


def register(*secrets: str) -> None:
    """Redact these strings from library logs from now on (short ones are ignored:
    they would redact ordinary words)."""
    with _lock:
        _secrets.update(s for s in secrets if s and len(s) >= MIN_SECRET)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = RedactSecrets()


def install() -> None:
    """Attach the filter to the libraries' loggers and their children. Idempotent."""
    manager: Any = logging.Logger.manager
    names = [
        *LOGGERS,
        *[n for n in manager.loggerDict if n.startswith(tuple(f"{x}." for x in LOGGERS))],
    ]
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
