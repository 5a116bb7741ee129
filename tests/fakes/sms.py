"""Local SMS gateways over HTTP: Kavenegar's REST API, and a generic JSON gateway.

``FakeKavenegar`` answers ``POST /v1/{API-KEY}/sms/send.json`` and ``sendarray.json``
(form-encoded, as Kavenegar documents) with Kavenegar's body ``{"return": {"status",
"message"}, "entries": [...]}`` and the same HTTP status: 403 for an unknown API key,
411 for a receptor that is not ``09…``/``00…`` digits, 412 for a sender line the
account does not have, 413 for an empty or too long message (900 characters), 414 for
more than 200 receptors, 419 for arrays of different lengths, 418 when the credit
(counted in segments) runs out. A ``localid`` already seen returns the first send's
entry and sends nothing (Kavenegar's deduplication).

``FakeGateway`` accepts anything authorised with its bearer token and answers
``{"data": {"messages": [{"id": …}]}}``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from services.dispatcher import sms
from tests.fakes.common import Script
from tests.fakes.server import FakeServer, Request, Response, _Drop

MESSAGES_FA = {
    200: "تایید شد",
    403: "کد شناسائی API-Key معتبر نمی‌باشد",
    411: "دریافت کننده نامعتبر است",
    412: "ارسال کننده نامعتبر است",
    413: "پیام خالی است و یا طول پیام بیش از حد مجاز می‌باشد",
    414: "حجم درخواست بیشتر از حد مجاز است",
    418: "اعتبار حساب شما کافی نیست",
    419: "طول آرایه متن و گیرنده و فرستنده هم اندازه نیست",
}


def kavenegar_body(status: int, entries: list[dict[str, Any]] | None = None) -> bytes:
    return orjson.dumps(
        {"return": {"status": status, "message": MESSAGES_FA.get(status, "")}, "entries": entries}
    )


@dataclass
class Sent:
    receptor: str
    message: str
    sender: str
    localid: str | None
    segments: int


@dataclass
class FakeKavenegar:
    api_key: str = "4A6F6E-FAKE-KEY-0000"
    lines: set[str] = field(default_factory=lambda: {"10004346"})
    credit_segments: int = 1_000_000
    script: Script = field(default_factory=Script)
    sent: list[Sent] = field(default_factory=list)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    by_localid: dict[str, dict[str, Any]] = field(default_factory=dict)
    server: FakeServer | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(8_792_343))

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    async def handle(self, request: Request) -> Response | _Drop:
        parts = request.path.split("?")[0].strip("/").split("/")
        if len(parts) != 4 or parts[0] != "v1" or parts[2] != "sms":
            return _answer(404)
        if parts[1] != self.api_key:
            return _answer(403)
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        self.calls.append((parts[3], form))
        scripted = await self.script.apply(request)
        if scripted is not None:
            return scripted
        if parts[3] == "send.json":
            receptors, messages = form.get("receptor", "").split(","), [form.get("message", "")]
            messages = messages * len(receptors)
            senders = [form.get("sender", "")] * len(receptors)
            localids = [form.get("localid")] * len(receptors)
        elif parts[3] == "sendarray.json":
            try:
                receptors = orjson.loads(form.get("receptor", "[]"))
                messages = orjson.loads(form.get("message", "[]"))
                senders = (
                    orjson.loads(form["sender"]) if "sender" in form else [""] * len(receptors)
                )
            except orjson.JSONDecodeError:
                return _answer(400)
            ids = form.get("localmessageids")
            localids = ids.split(",") if ids else [None] * len(receptors)
            if not len(receptors) == len(messages) == len(senders) == len(localids):
                return _answer(419)
        else:
            return _answer(404)
        if len(receptors) > 200:
            return _answer(414)
        for receptor, message, sender in zip(receptors, messages, senders, strict=True):
            national = receptor.startswith("09") and len(receptor) == 11
            if not (receptor.isdigit() and (national or receptor.startswith("00"))):
                return _answer(411)
            if sender and sender not in self.lines:
                return _answer(412)
            if not message or len(message) > 900:
                return _answer(413)
        entries = []
        for receptor, message, sender, lid in zip(
            receptors, messages, senders, localids, strict=True
        ):
            if lid and lid in self.by_localid:
                entries.append(self.by_localid[lid])
                continue
            segments = sms.count(message).segments
            if segments > self.credit_segments:
                return _answer(418)
            self.credit_segments -= segments
            entry = {
                "messageid": next(self._ids),
                "message": message,
                "status": 1,
                "statustext": "در صف ارسال",
                "sender": sender or "10004346",
                "receptor": receptor,
                "date": int(time.time()),
                "cost": 120 * segments,
            }
            self.sent.append(Sent(receptor, message, sender, lid, segments))
            if lid:
                self.by_localid[lid] = entry
            entries.append(entry)
        return _answer(200, entries)


def _answer(status: int, entries: list[dict[str, Any]] | None = None) -> Response:
    return Response(status, kavenegar_body(status, entries), {"content-type": "application/json"})


@dataclass
class FakeGateway:
    token: str = "gw-token-abcdef123456"
    script: Script = field(default_factory=Script)
    received: list[Request] = field(default_factory=list)
    server: FakeServer | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    async def handle(self, request: Request) -> Response | _Drop:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Response(401, b'{"error": "unauthorized"}')
        scripted = await self.script.apply(request)
        if scripted is not None:
            return scripted
        self.received.append(request)
        body = {"data": {"messages": [{"id": f"gw-{next(self._ids)}", "status": "queued"}]}}
        return Response(202, orjson.dumps(body), {"content-type": "application/json"})


async def start_kavenegar() -> FakeKavenegar:
    fake = FakeKavenegar()
    fake.server = await FakeServer(fake.handle).start()
    return fake


async def start_gateway() -> FakeGateway:
    fake = FakeGateway()
    fake.server = await FakeServer(fake.handle).start()
    return fake
