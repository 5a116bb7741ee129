"""Email over SMTP (aiosmtplib): multipart text + HTML, one-click unsubscribe.

Each message carries ``List-Unsubscribe: <https://…>`` and ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (RFC 8058: what Gmail and Yahoo require of bulk senders;
the https URL is the message's ``unsubscribe_url``), a ``Message-ID`` derived from the
job id, and ``X-Hodhod-Job-Id``. DKIM signing is the relay's job.

Connections are pooled per app (``pool_size``, kept open between sends, replaced after
an error); ``tls`` is ``starttls`` (port 587, the default), ``tls`` (implicit TLS, port
465) or ``none`` (a local relay only). ``send_many`` sends a batch over the pool's
connections, one SMTP session per connection.

| SMTP answer | Outcome |
|---|---|
| 250 | sent, ``provider_message_id`` = the Message-ID |
| 550, 551, 553 to RCPT (no such mailbox, relaying denied, bad address) | invalid_address |
| 552 (message too big) | payload_too_large |
| other 5xx | rejected |
| 4xx (greylisting, try later, 421 closing) | unavailable, transient |
| 535 / authentication failed | auth |
| connection refused, timeout, dropped | network / timeout, transient |
"""

from __future__ import annotations

import asyncio
import re
import ssl
from datetime import UTC, datetime
from email.headerregistry import Address as MailAddress
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from services.dispatcher.providers import redact
from services.dispatcher.providers.base import (
    AUTH,
    INVALID_ADDRESS,
    MISCONFIGURED,
    NETWORK,
    PAYLOAD_TOO_LARGE,
    REJECTED,
    TIMEOUT,
    UNAVAILABLE,
    Address,
    Message,
    Outcome,
    failed,
    sent,
)

BAD_MAILBOX = {550, 551, 553}
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def message_id(message: Message, domain: str) -> str:
    return f"<{_ID_UNSAFE.sub('-', message.job_id)}.{_ID_UNSAFE.sub('-', message.app_id)}@{domain}>"


def build_email(
    message: Message,
    to: str,
    *,
    from_address: str,
    from_name: str | None = None,
    reply_to: str | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """The MIME message for one recipient. Pure. Raises ValueError for an address
    that cannot be written in a header."""
    email = EmailMessage()
    local, _, domain = from_address.rpartition("@")
    email["From"] = MailAddress(display_name=from_name or "", username=local, domain=domain)
    email["To"] = to
    if reply_to:
        email["Reply-To"] = reply_to
    email["Subject"] = message.subject or message.title or ""
    email["Date"] = format_datetime(now or datetime.now(UTC))
    email["Message-ID"] = message_id(message, domain or "hodhod.local")
    email["X-Hodhod-Job-Id"] = message.job_id
    if message.unsubscribe_url:
        email["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        if message.unsubscribe_url.startswith("https://"):
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    if message.category:
        email["X-Hodhod-Category"] = message.category
    email.set_content(message.body)
    if message.html:
        email.add_alternative(message.html, subtype="html")
    return email


def smtp_failure(exc: Exception) -> Outcome:
    """Map an aiosmtplib exception to an Outcome (the table above). Pure."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return failed("smtp", AUTH, f"SMTP authentication refused ({exc.code})")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        code = codes[0] if codes else 550
        text = exc.recipients[0].message if exc.recipients else ""
        return _by_code(code, text, recipient=True)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return _by_code(exc.code, exc.message, recipient=True)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError):
        return failed("smtp", TIMEOUT, f"SMTP timed out ({type(exc).__name__})", transient=True)
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
        return failed(
            "smtp", NETWORK, f"SMTP connection failed ({type(exc).__name__})", transient=True
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _by_code(exc.code, exc.message, recipient=False)
    if isinstance(exc, aiosmtplib.SMTPException):  # e.g. the relay offers no AUTH or TLS
        return failed("smtp", MISCONFIGURED, f"SMTP relay refused the session: {exc.message}")
    return failed("smtp", NETWORK, f"SMTP failed ({type(exc).__name__})", transient=True)


def _by_code(code: int, text: str, *, recipient: bool) -> Outcome:
    described = f"SMTP {code} {text}".strip()
    if 400 <= code < 500:
        return failed("smtp", UNAVAILABLE, described, transient=True)
    if code == 552:
        return failed("smtp", PAYLOAD_TOO_LARGE, described)
    if recipient and code in BAD_MAILBOX:
        return failed("smtp", INVALID_ADDRESS, described)
    if code in (530, 535):
        return failed("smtp", AUTH, described)
    return failed("smtp", REJECTED, described)


class SmtpProvider:
    """One app's SMTP relay (see the module docstring)."""

    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        from_address: str,
        username: str | None = None,
        password: str | None = None,
        tls: str = "starttls",
        from_name: str | None = None,
        reply_to: str | None = None,
        timeout_s: float = 10.0,
        pool_size: int = 2,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if password:
            redact.register(password)
        self._host, self._port = host, port
        self._username, self._password = username, password
        self._tls = tls
        self._from = from_address
        self._from_name, self._reply_to = from_name, reply_to
        self._timeout = timeout_s
        self._context = tls_context or ssl.create_default_context()
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._pool_size = pool_size

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._tls == "tls",
            start_tls=True if self._tls == "starttls" else False,
            tls_context=self._context,
            timeout=self._timeout,
        )
        await client.connect()
        if self._username and self._password:
            await client.login(self._username, self._password)
        return client

    async def _checkout(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A connected client, and whether it was reused from the pool."""
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client, True
        return await self._connect(), False

    async def _send_on(
        self, client: aiosmtplib.SMTP, message: Message, address: Address
    ) -> Outcome:
        try:
            email = build_email(
                message,
                address.value,
                from_address=self._from,
                from_name=self._from_name,
                reply_to=self._reply_to,
            )
        except (ValueError, TypeError) as exc:
            return failed(self.name, INVALID_ADDRESS, f"cannot address the message: {exc}")
        errors, _ = await client.send_message(email)
        if errors:  # some recipients refused while others were taken: only one here
            code, text = next(iter(errors.values()))
            return _by_code(code, text, recipient=True)
        return sent(self.name, str(email["Message-ID"]))

    async def _session(self, batch: list[tuple[Message, Address]]) -> list[Outcome]:
        """Send ``batch`` in order on one pooled connection. Any error ends the
        connection (the next message opens another); a pooled connection the relay
        closed while idle is replaced and the message tried once more."""
        outcomes: list[Outcome] = []
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            reused = False
            for message, address in batch:
                if address.kind != "email":
                    raise ValueError(f"the SMTP provider cannot send to a {address.kind} address")
                for attempt in range(2):
                    try:
                        if client is None:
                            client, reused = await self._checkout()
                        outcomes.append(await self._send_on(client, message, address))
                        reused = True
                        break
                    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                        if client is not None:
                            client.close()
                        client, stale = None, reused
                        if (
                            attempt == 0
                            and stale
                            and isinstance(exc, aiosmtplib.SMTPServerDisconnected)
                        ):
                            continue
                        outcomes.append(smtp_failure(exc))
                        break
            if client is not None and client.is_connected:
                self._idle.append(client)
        return outcomes

    async def send(self, message: Message, address: Address) -> Outcome:
        return (await self._session([(message, address)]))[0]

    async def send_many(self, items: list[tuple[Message, Address]]) -> list[Outcome]:
        """Spread ``items`` over the pool's connections; Outcomes in ``items`` order."""
        if not items:
            return []
        lanes = min(self._pool_size, len(items))
        parts = [items[i::lanes] for i in range(lanes)]
        results = await asyncio.gather(*(self._session(part) for part in parts))
        outcomes: list[Outcome | None] = [None] * len(items)
        for lane, result in enumerate(results):
            for k, outcome in enumerate(result):
                outcomes[lane + k * lanes] = outcome
        return [o for o in outcomes if o is not None]

    async def aclose(self) -> None:
        while self._idle:
            client = self._idle.pop()
            try:
                await client.quit()
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                client.close()
