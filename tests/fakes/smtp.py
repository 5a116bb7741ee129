"""A local SMTP server (aiosmtpd) in the running event loop: records each message as
parsed MIME, with AUTH (PLAIN/LOGIN), STARTTLS or implicit TLS, and scripted refusals
(a recipient that does not exist, a 4xx "try later", a dropped connection)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None


@dataclass
class FakeSmtp:
    username: str = "mailer"
    password: str = "smtp-pass-9f8e7d"
    unknown_recipients: set[str] = field(default_factory=set)
    # "rcpt": answer this to the next RCPT; "data": to the next DATA; "drop": hang up
    refusals: list[tuple[str, str]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    sessions: int = 0
    protocols: list[SMTP] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    def _take(self, stage: str) -> str | None:
        for i, (where, answer) in enumerate(self.refusals):
            if where == stage:
                del self.refusals[i]
                return answer
        return None

    # aiosmtpd handler hooks
    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self._take("rcpt")
        if refusal is not None:
            return refusal
        if address in self.unknown_recipients:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self._take("data")
        if refusal == "drop":
            assert server.transport is not None
            server.transport.abort()
            return "421 closing"
        if refusal is not None:
            return refusal
        raw = bytes(envelope.original_content or b"")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append(
            Received(
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                parsed,
                raw,
                server._tls_protocol is not None or session.ssl is not None,
                self.username if session.authenticated else None,
            )
        )
        return "250 2.0.0 Ok: queued"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False)


async def start(
    *,
    tls_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    require_auth: bool = True,
) -> FakeSmtp:
    """Serve on a free port: STARTTLS offered when ``tls_context`` is given, or TLS
    from the first byte with ``implicit_tls``."""
    fake = FakeSmtp()

    def factory() -> SMTP:
        fake.sessions += 1
        with warnings.catch_warnings():  # the fake's own AUTH-without-STARTTLS mode
            warnings.simplefilter("ignore", UserWarning)
            protocol = _smtp()
        fake.protocols.append(protocol)
        return protocol

    def _smtp() -> SMTP:
        return SMTP(
            fake,
            hostname="fake-smtp.local",
            tls_context=None if implicit_tls else tls_context,
            require_starttls=bool(tls_context) and not implicit_tls,
            authenticator=fake._authenticate,
            auth_required=require_auth,
            auth_require_tls=bool(tls_context) and not implicit_tls,
            decode_data=False,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, "127.0.0.1", 0, ssl=tls_context if implicit_tls else None
    )
    fake._server = server
    fake.port = server.sockets[0].getsockname()[1]
    return fake


def hang_up(fake: FakeSmtp) -> None:
    """Close every open session from the server's side (an idle timeout)."""
    for protocol in fake.protocols:
        if protocol.transport is not None:
            protocol.transport.close()


async def stop(fake: FakeSmtp) -> None:
    if fake._server is not None:
        fake._server.close()
