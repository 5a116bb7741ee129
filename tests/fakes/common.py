"""What every fake shares: a self-signed certificate made at test time, the record of
requests received, and scripted failures (error injection)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fakes.server import DROP, Request, Response, _Drop


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost; ``ca_file`` is what a
    client trusts (``ssl.create_default_context(cafile=...)``)."""

    cert_file: Path
    key_file: Path

    @property
    def ca_file(self) -> Path:
        return self.cert_file

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def self_signed(directory: Path | None = None) -> Certificate:
    """Make a fresh P-256 key and a one-day certificate for the loopback host."""
    where = directory or Path(tempfile.mkdtemp(prefix="hodhod-fake-tls-"))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hodhod fake provider")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = where / "cert.pem", where / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


@dataclass
class Failure:
    """One scripted answer instead of the fake's own: an error status with the
    provider's body and headers, a slow answer (``delay_s``), or a dropped connection."""

    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False
    # Only requests this accepts take the failure (e.g. one device token).
    match: Callable[[Request], bool] | None = None
    # After the delay, answer normally instead (a slow but successful answer).
    then_succeed: bool = False


class Script:
    """Failures waiting for the next matching requests, each used ``times`` times."""

    def __init__(self) -> None:
        self._items: list[list[object]] = []

    def add(self, failure: Failure, times: int = 1) -> None:
        self._items.append([failure, times])

    def clear(self) -> None:
        self._items.clear()

    def take(self, request: Request) -> Failure | None:
        for item in self._items:
            failure, left = item
            assert isinstance(failure, Failure) and isinstance(left, int)
            if failure.match is None or failure.match(request):
                if left <= 1:
                    self._items.remove(item)
                else:
                    item[1] = left - 1
                return failure
        return None

    async def apply(self, request: Request) -> Response | _Drop | None:
        """The scripted answer for ``request``, or None to answer normally."""
        failure = self.take(request)
        if failure is None:
            return None
        if failure.delay_s:
            await asyncio.sleep(failure.delay_s)
        if failure.then_succeed:
            return None
        if failure.drop:
            return DROP
        return Response(failure.status, failure.body, dict(failure.headers))
