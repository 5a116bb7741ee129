"""SMS through HTTP gateways: Kavenegar's REST API, and a generic JSON/form gateway.

Both take E.164 numbers (``+98912…``; national forms are normalised first) and count
the text's segments as the carrier will (``services.dispatcher.sms``), so a receipt can
say what a message cost.

**Kavenegar** (``POST {base}/v1/{API-KEY}/sms/send.json``, form-encoded ``receptor``,
``message``, ``sender``, ``localid``; bulk: ``sms/sendarray.json`` with JSON arrays of
receptors, senders and messages, at most 200 a call, and ``localmessageids``). The
answer's ``return.status`` (HTTP status too) decides:

| return.status | Outcome |
|---|---|
| 200 | sent, ``provider_message_id`` = the entry's ``messageid`` (see below) |
| 411 (receptor invalid) | invalid_address |
| 412 (sender invalid), 501 (only the account owner's number) | misconfigured |
| 418 (credit insufficient) | insufficient_credit |
| 401, 403, 407, 416 (account disabled, API key invalid, access denied, IP not allowed) | auth |
| 409, 5xx (server cannot answer now) | unavailable, transient |
| 429, 451 (too many calls) | quota, transient |
| 413, 422 (text too long / bad characters) and other codes | rejected |

An entry whose status is 6 (failed), 11 (undelivered), 13 (cancelled), 14 (blocked by
the recipient) or 100 (unknown) is ``rejected``.

``localid`` is derived from the job id: Kavenegar does not send again a message whose
local id it already has, so a resend after a crash is not a second SMS.

**Generic gateway**: ``url``, ``method``, a body template (JSON object or form fields)
whose string values may hold ``{to}``, ``{to_national}``, ``{text}``, ``{sender}``,
``{job_id}``, ``{segments}`` and ``{secret}``; headers likewise (``Authorization:
Bearer {secret}``); the message id read from ``message_id_path`` (dotted, e.g.
``data.messages.0.id``) of a JSON answer. 2xx is sent; 429 quota, 5xx unavailable
(both transient), 401/403 auth, other 4xx rejected.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import orjson

from services.dispatcher import sms
from services.dispatcher.providers import redact
from services.dispatcher.providers.base import (
    AUTH,
    INSUFFICIENT_CREDIT,
    INVALID_ADDRESS,
    MISCONFIGURED,
    QUOTA,
    REJECTED,
    UNAVAILABLE,
    Address,
    Message,
    Outcome,
    failed,
    retry_after,
    sent,
)
from services.dispatcher.providers.http import transport_failure

KAVENEGAR_URL = "https://api.kavenegar.com"
BULK_MAX = 200
FAILED_ENTRY = {
    6: "failed",
    11: "undelivered",
    13: "cancelled",
    14: "blocked by the recipient",
    100: "unknown",
}
AUTH_CODES = {401, 403, 407, 416}
PLACEHOLDERS = ("to", "to_national", "text", "sender", "job_id", "segments", "secret")


def kavenegar_receptor(e164: str) -> str:
    """Kavenegar's receptor form: ``0912…`` for Iranian numbers, ``00…`` for others."""
    if e164.startswith("+98"):
        return sms.national_phone(e164)
    return "00" + e164.removeprefix("+")


def local_id(job_id: str) -> str:
    """A numeric local message id for ``job_id`` (stable: a resend carries the same)."""
    return str(int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:7], "big"))


def kavenegar_status(code: int, text: str) -> Outcome | None:
    """The Outcome of a non-200 ``return.status``; None for 200. Pure."""
    if code == 200:
        return None
    described = f"Kavenegar {code}: {text}".strip()
    if code == 411:
        return failed("kavenegar", INVALID_ADDRESS, described)
    if code in (412, 501):
        return failed("kavenegar", MISCONFIGURED, described)
    if code == 418:
        return failed("kavenegar", INSUFFICIENT_CREDIT, described)
    if code in AUTH_CODES:
        return failed("kavenegar", AUTH, described)
    if code in (429, 451):
        return failed("kavenegar", QUOTA, described, transient=True)
    if code == 409 or code >= 500:
        return failed("kavenegar", UNAVAILABLE, described, transient=True)
    return failed("kavenegar", REJECTED, described)


def _entry_outcome(entry: Any) -> Outcome:
    if not isinstance(entry, dict):
        return failed("kavenegar", REJECTED, "Kavenegar answered without an entry")
    status = entry.get("status")
    if isinstance(status, int) and status in FAILED_ENTRY:
        text = entry.get("statustext") or FAILED_ENTRY[status]
        return failed("kavenegar", REJECTED, f"Kavenegar entry status {status}: {text}")
    message_id = entry.get("messageid")
    return sent("kavenegar", str(message_id) if message_id is not None else None)


def _phone(address: Address, provider: str) -> str | Outcome:
    if address.kind != "sms":
        raise ValueError(f"the {provider} provider cannot send to a {address.kind} address")
    number = sms.normalise_phone(address.value)
    if number is None:
        return failed(provider, INVALID_ADDRESS, "not a valid phone number")
    return number


class KavenegarProvider:
    """One app's Kavenegar account. ``client`` is shared (the registry closes it)."""

    name = "kavenegar"

    def __init__(
        self,
        *,
        api_key: str,
        client: httpx.AsyncClient,
        sender: str | None = None,
        base_url: str = KAVENEGAR_URL,
    ) -> None:
        redact.register(api_key)
        self._root = f"{base_url.rstrip('/')}/v1/{api_key}/sms"
        self._client = client
        self._sender = sender

    async def _call(self, method: str, form: dict[str, str]) -> tuple[Outcome | None, list[Any]]:
        """(an Outcome for the whole call when it failed, else None; the entries)."""
        try:
            response = await self._client.post(f"{self._root}/{method}.json", data=form)
        except httpx.HTTPError as exc:
            return transport_failure(self.name, exc), []
        try:
            answer = orjson.loads(response.content)
            returned = answer.get("return") or {}
            code = int(returned.get("status", response.status_code))
            text = str(returned.get("message", ""))
            entries = answer.get("entries") or []
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            code, text, entries = response.status_code, "", []
        problem = kavenegar_status(code, text)
        if problem is not None and problem.transient:
            wait = retry_after(response.headers.get("retry-after"))
            if wait is not None:
                problem = failed(
                    self.name,
                    str(problem.reason),
                    str(problem.error),
                    transient=True,
                    retry_after_s=wait,
                )
        return problem, entries if isinstance(entries, list) else []

    async def send(self, message: Message, address: Address) -> Outcome:
        number = _phone(address, self.name)
        if isinstance(number, Outcome):
            return number
        form = {
            "receptor": kavenegar_receptor(number),
            "message": message.body,
            "localid": local_id(message.job_id),
        }
        if self._sender:
            form["sender"] = self._sender
        problem, entries = await self._call("send", form)
        if problem is not None:
            return problem
        return _entry_outcome(entries[0] if entries else None)

    async def send_many(self, items: list[tuple[Message, Address]]) -> list[Outcome]:
        """Many SMS in ``sendarray`` calls of up to 200. A call refused for one bad
        receptor (411) is retried message by message, so the others still go."""
        outcomes: list[Outcome | None] = [None] * len(items)
        batch: list[tuple[int, Message, str]] = []
        for i, (message, address) in enumerate(items):
            number = _phone(address, self.name)
            if isinstance(number, Outcome):
                outcomes[i] = number
            else:
                batch.append((i, message, number))
        for start in range(0, len(batch), BULK_MAX):
            chunk = batch[start : start + BULK_MAX]
            form = {
                "receptor": orjson.dumps([kavenegar_receptor(n) for _, _, n in chunk]).decode(),
                "message": orjson.dumps([m.body for _, m, _ in chunk]).decode(),
                "localmessageids": ",".join(local_id(m.job_id) for _, m, _ in chunk),
            }
            if self._sender:
                form["sender"] = orjson.dumps([self._sender] * len(chunk)).decode()
            problem, entries = await self._call("sendarray", form)
            if problem is not None and problem.reason == INVALID_ADDRESS and len(chunk) > 1:
                for i, message, _ in chunk:
                    outcomes[i] = await self.send(message, items[i][1])
                continue
            for k, (i, _, _) in enumerate(chunk):
                outcomes[i] = problem or _entry_outcome(entries[k] if k < len(entries) else None)
        return [o for o in outcomes if o is not None]

    async def aclose(self) -> None:
        return None


def _fill(value: Any, values: dict[str, str]) -> Any:
    """Replace ``{name}`` placeholders in the strings of a template (no format()
    semantics: nothing but the listed names is ever looked up)."""
    if isinstance(value, str):
        for name in PLACEHOLDERS:
            value = value.replace("{" + name + "}", values.get(name, ""))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def _dig(answer: Any, path: str) -> str | None:
    for part in path.split("."):
        if isinstance(answer, dict):
            answer = answer.get(part)
        elif isinstance(answer, list) and part.isdigit() and int(part) < len(answer):
            answer = answer[int(part)]
        else:
            return None
    return None if answer is None or isinstance(answer, dict | list) else str(answer)


def gateway_outcome(
    status: int, body: bytes, headers: httpx.Headers | dict[str, str], message_id_path: str | None
) -> Outcome:
    """Map a generic gateway's answer to an Outcome. Pure."""
    if 200 <= status < 300:
        message_id = None
        if message_id_path:
            try:
                message_id = _dig(orjson.loads(body), message_id_path)
            except orjson.JSONDecodeError:
                message_id = None
        return sent("sms_http", message_id)
    described = f"gateway {status}: {body[:200].decode('utf-8', 'replace')}".strip()
    wait = retry_after(headers.get("retry-after"))
    if status == 429:
        return failed("sms_http", QUOTA, described, transient=True, retry_after_s=wait)
    if status >= 500:
        return failed("sms_http", UNAVAILABLE, described, transient=True, retry_after_s=wait)
    if status in (401, 403):
        return failed("sms_http", AUTH, described)
    return failed("sms_http", REJECTED, described)


class HttpSmsProvider:
    """One app's generic HTTP SMS gateway (see the module docstring)."""

    name = "sms_http"

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        client: httpx.AsyncClient,
        method: str = "POST",
        body: dict[str, Any] | None = None,
        body_format: str = "json",
        headers: dict[str, str] | None = None,
        sender: str | None = None,
        message_id_path: str | None = None,
    ) -> None:
        redact.register(secret)
        self._url = url
        self._secret = secret
        self._client = client
        self._method = method.upper()
        self._body = body if body is not None else {"to": "{to}", "text": "{text}"}
        self._format = body_format
        self._headers = headers or {"Authorization": "Bearer {secret}"}
        self._sender = sender or ""
        self._message_id_path = message_id_path

    async def send(self, message: Message, address: Address) -> Outcome:
        number = _phone(address, self.name)
        if isinstance(number, Outcome):
            return number
        values = {
            "to": number,
            "to_national": sms.national_phone(number),
            "text": message.body,
            "sender": self._sender,
            "job_id": message.job_id,
            "segments": str(sms.count(message.body).segments),
            "secret": self._secret,
        }
        body = _fill(self._body, values)
        headers = _fill(self._headers, values)
        url = _fill(self._url, {**values, "text": "", "to": number})
        kwargs: dict[str, Any] = {"headers": headers}
        if self._method == "GET":
            kwargs["params"] = body
        elif self._format == "form":
            kwargs["data"] = body
        else:
            kwargs["content"] = orjson.dumps(body)
            kwargs["headers"] = {"content-type": "application/json", **headers}
        try:
            response = await self._client.request(self._method, url, **kwargs)
        except httpx.HTTPError as exc:
            return transport_failure(self.name, exc)
        return gateway_outcome(
            response.status_code, response.content, response.headers, self._message_id_path
        )

    async def aclose(self) -> None:
        return None
