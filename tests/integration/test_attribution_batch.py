"""The matcher decides a batch's installs together (set-wise reads, one ledger upsert);
the result must be what deciding them one at a time gives. Each scenario is sent to one
app as a single batch and to a twin app (same trackers, same settings) one record per
batch, through the real ``Matcher`` against the real Postgres and broker; the ledgers
and the latest statement published per install must agree, and must be what the
scenario expects."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.runtime.kafka import Producer
from libs.runtime.pipeline import Batch, Record
from libs.runtime.settings import PlatformSettings
from libs.runtime.tenancy import App, provision_app
from libs.schemas import (
    CONTRACTS,
    ClickRecorded,
    Contract,
    Event,
    InstallReported,
    UserAttributed,
    UserVerified,
    encode,
)
from services.admin import store as admin_store
from services.attribution.consumer import Matcher

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BASE_MS = int(T.timestamp() * 1000)
PHONE_UA = "Mozilla/5.0 (Linux; Android 13; SM-A536E) AppleWebKit/537.36 Mobile Safari/537.36"
TOPIC_OF = {c.model: c.topic for c in CONTRACTS.values()}

Scenario = Callable[[str, list[str]], list[Contract]]


class RecordingProducer(Producer):
    """The real producer (records reach the test broker), remembering what it published."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, client_id="hodhod-test-attribution-batch")
        self.published: list[Contract] = []

    async def publish_all(self, messages: Sequence[Contract]) -> None:
        self.published.extend(messages)
        await super().publish_all(messages)


@pytest_asyncio.fixture(loop_scope="session")
async def producer(settings: PlatformSettings) -> AsyncIterator[RecordingProducer]:
    made = RecordingProducer(settings.kafka_bootstrap)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def new_app(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    fraud: dict[str, Any] | None = None,
    require_signature: bool = False,
) -> tuple[str, list[str]]:
    """An app with two trackers written as the admin API writes them; returns (app id,
    tracker tokens)."""
    keys = await provision_app(settings.database_url, name=f"batch-{secrets.token_hex(3)}")
    tokens = []
    async with sessions() as session, session.begin():
        for name in ("paid", "influencer"):
            tracker = await admin_store.create_tracker(
                session,
                app_id=keys.app_id,
                values={"name": name, "channel": "google_play", "store_url": "https://e.com/a"},
            )
            tokens.append(tracker.token)
        await session.execute(
            update(App)
            .where(App.id == keys.app_id)
            .values(fraud=fraud or {}, require_signature=require_signature)
        )
    return keys.app_id, tokens


def click(
    app_id: str, token: str, click_id: str, *, minutes: float, adid: str | None = None
) -> ClickRecorded:
    return ClickRecorded(
        app_id=app_id,
        click_id=click_id,
        tracker_token=token,
        ts=T + timedelta(minutes=minutes),
        ip="5.9.9.9",
        user_agent=PHONE_UA,
        adid=adid,
    )


def install(app_id: str, event_id: str, device_id: str, *, minutes: float, **fields: Any) -> Any:
    return InstallReported(
        app_id=app_id,
        event_id=event_id,
        device_id=device_id,
        ts=T + timedelta(minutes=minutes),
        received_at=T + timedelta(minutes=minutes),
        platform="android",
        **fields,
    )


def login(app_id: str, device_id: str, user_id: str, *, minutes: float) -> Event:
    return Event(
        app_id=app_id,
        event_id=f"login-{device_id}-{user_id}",
        name="$identify",
        device_id=device_id,
        user_id=user_id,
        ts=T + timedelta(minutes=minutes),
        received_at=T + timedelta(minutes=minutes),
    )


def records(values: Sequence[Contract], first: int = 0) -> list[Record]:
    """Records a second apart, in order (the stamps a replay reproduces)."""
    return [
        Record(TOPIC_OF[type(v)], 0, first + i, None, v, BASE_MS + (first + i) * 1000)
        for i, v in enumerate(values)
    ]


async def ledger(
    sessions: async_sessionmaker[AsyncSession], app_id: str, tokens: list[str]
) -> dict[str, tuple[Any, ...]]:
    """install event id → the row, trackers named by their place in ``tokens``."""
    async with sessions() as session:
        rows = (
            await session.execute(
                text("SELECT * FROM attribution_installs WHERE app_id = :a"), {"a": app_id}
            )
        ).mappings()
        return {
            r["install_event_id"]: (
                r["device_id"],
                r["user_key"],
                r["method"],
                r["kind"],
                r["status"],
                tokens.index(r["tracker_token"]) if r["tracker_token"] else None,
                r["click_id"],
                r["fraud_reasons"],
                r["attributed_at"],
            )
            for r in rows
        }


def latest(published: Sequence[Contract], app_id: str, tokens: list[str]) -> dict[str, Any]:
    """install event id → the newest statement published about it (the one readers keep),
    without what names the app."""
    found: dict[str, Any] = {}
    for m in published:
        if isinstance(m, UserAttributed) and m.app_id == app_id:
            before = found.get(m.install_event_id)
            if before is None or m.attributed_at >= before["attributed_at"]:
                statement = m.model_dump(exclude={"app_id", "attribution_id"})
                if m.tracker_token:
                    statement["tracker_token"] = tokens.index(m.tracker_token)
                found[m.install_event_id] = statement
    return found


async def together_and_one_by_one(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
    scenario: Scenario,
    *,
    before: Scenario | None = None,
    **app: Any,
) -> tuple[dict[str, tuple[Any, ...]], dict[str, Any]]:
    """Run ``scenario`` (after ``before``, one record per batch) in one batch in an app and
    one record per batch in its twin; assert they agree and return the ledger and the
    latest statements."""
    matcher = Matcher(sessions, producer)
    results = []
    for together in (True, False):
        app_id, tokens = await new_app(settings, sessions, **app)
        setup = before(app_id, tokens) if before else []
        for record in records(setup):
            await matcher(Batch(records=[record]))
        batch = records(scenario(app_id, tokens), first=len(setup))
        if together:
            await matcher(Batch(records=batch))
        else:
            for record in batch:
                await matcher(Batch(records=[record]))
        results.append(
            (
                await ledger(sessions, app_id, tokens),
                latest(producer.published, app_id, tokens),
            )
        )
    (rows, said), (one_rows, one_said) = results
    assert rows == one_rows
    assert said == one_said
    return rows, said


def kinds(rows: dict[str, tuple[Any, ...]], *ids: str) -> list[tuple[Any, ...]]:
    """(method, kind, status, tracker, fraud reasons) of the installs ``ids``."""
    return [(rows[i][2], rows[i][3], rows[i][4], rows[i][5], rows[i][7]) for i in ids]


async def test_installs_of_one_advertising_id_in_one_batch(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    def scenario(app_id: str, tokens: list[str]) -> list[Contract]:
        return [
            click(app_id, tokens[0], "c-1", minutes=-60, adid="ad-1"),
            install(app_id, "i-1", "phone", minutes=0, adid="ad-1", ip="5.1.1.1"),
            # reinstalled: a new device id, the same advertising id (any case)
            install(app_id, "i-2", "phone-again", minutes=1, adid="AD-1", ip="5.1.1.2"),
            install(app_id, "i-3", "phone-third", minutes=2, adid="ad-1", ip="5.1.1.3"),
        ]

    rows, said = await together_and_one_by_one(settings, sessions, producer, scenario)
    assert kinds(rows, "i-1", "i-2", "i-3") == [
        ("adid", "new_user", "attributed", 0, []),
        ("adid", "reinstall", "attributed", 0, []),
        ("adid", "reinstall", "attributed", 0, []),
    ]
    assert [said[i]["kind"] for i in ("i-1", "i-2", "i-3")] == [
        "new_user",
        "reinstall",
        "reinstall",
    ]


async def test_installs_of_one_user_in_one_batch(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    def scenario(app_id: str, tokens: list[str]) -> list[Contract]:
        return [
            click(app_id, tokens[1], "c-1", minutes=-30),
            install(
                app_id,
                "i-1",
                "phone",
                minutes=0,
                user_id="u-1",
                adid="ad-phone",
                referrer="click_id=c-1",
            ),
            # the user's second device: a new device under the original tracker
            install(app_id, "i-2", "tablet", minutes=1, user_id="u-1", adid="ad-tablet"),
            # the phone again: a reinstall
            install(app_id, "i-3", "phone-2", minutes=2, user_id="u-1", adid="ad-phone"),
            # another user on another device through the other tracker
            click(app_id, tokens[0], "c-2", minutes=-20),
            install(app_id, "i-4", "other", minutes=3, user_id="u-2", referrer="click_id=c-2"),
        ]

    rows, _ = await together_and_one_by_one(settings, sessions, producer, scenario)
    assert kinds(rows, "i-1", "i-2", "i-3", "i-4") == [
        ("click_id", "new_user", "attributed", 1, []),
        ("organic", "new_device", "attributed", 1, []),
        ("organic", "reinstall", "attributed", None, []),
        ("click_id", "new_user", "attributed", 0, []),
    ]


async def test_installs_from_one_ip_in_one_batch(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    """A device farm: more than two counted installs from one address in an hour are
    rejected; rejected ones do not count for the next."""

    def scenario(app_id: str, tokens: list[str]) -> list[Contract]:
        return [
            install(app_id, f"i-{m}", f"dev-{m}", minutes=m, adid=f"ad-{m}", ip="5.6.7.8")
            for m in (0, 1, 2, 3, 70)
        ]

    rows, said = await together_and_one_by_one(
        settings, sessions, producer, scenario, fraud={"max_installs_per_ip_hour": 2}
    )
    assert [rows[f"i-{m}"][4] for m in (0, 1, 2, 3, 70)] == [
        "attributed",
        "attributed",
        "rejected",
        "rejected",
        "attributed",
    ]
    assert said["i-3"]["fraud_reasons"] == ["device_farm"]


async def test_copies_of_one_install_in_one_batch(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    """A forged copy (its signature failed) is rejected until the signed report arrives,
    and never overrides it afterwards; a replayed report changes nothing but the stamp."""

    def scenario(app_id: str, tokens: list[str]) -> list[Contract]:
        def report(signature: str) -> Any:
            return install(app_id, "i-1", "phone", minutes=0, adid="ad-1", signature=signature)

        return [report("bad_signature"), report("ok"), report("replay"), report("ok")]

    rows, said = await together_and_one_by_one(
        settings, sessions, producer, scenario, require_signature=True
    )
    assert kinds(rows, "i-1") == [("organic", "organic", "attributed", None, [])]
    assert said["i-1"]["attributed_at"] == T.replace(second=3)  # the last signed report


async def test_late_click_in_a_batch_with_installs_of_its_device(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    """Two installs named a click before it was indexed (organic); the click arrives
    twice in a batch with another install of the same advertising id."""

    def before(app_id: str, tokens: list[str]) -> list[Contract]:
        return [
            install(app_id, "i-1", "phone", minutes=0, adid="ad-1", referrer="click_id=c-1"),
            install(app_id, "i-2", "phone-2", minutes=5, adid="ad-1", referrer="click_id=c-1"),
        ]

    def scenario(app_id: str, tokens: list[str]) -> list[Contract]:
        late = click(app_id, tokens[0], "c-1", minutes=-10, adid="ad-1")
        return [late, install(app_id, "i-3", "phone-3", minutes=20, adid="ad-1"), late]

    rows, _ = await together_and_one_by_one(settings, sessions, producer, scenario, before=before)
    assert kinds(rows, "i-1", "i-2", "i-3") == [
        ("click_id", "new_user", "attributed", 0, []),
        ("click_id", "reinstall", "attributed", 0, []),
        ("adid", "reinstall", "attributed", 0, []),
    ]


async def test_an_install_and_the_login_of_its_device_in_one_batch(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    def scenario(app_id: str, tokens: list[str]) -> list[Contract]:
        return [
            click(app_id, tokens[1], "c-1", minutes=-30),
            install(app_id, "i-1", "phone", minutes=0, adid="ad-1", referrer="click_id=c-1"),
            login(app_id, "phone", "u-1", minutes=1),
        ]

    rows, said = await together_and_one_by_one(settings, sessions, producer, scenario)
    assert rows["i-1"][1] == "u-1"
    assert kinds(rows, "i-1") == [("click_id", "new_user", "attributed", 1, [])]
    assert said["i-1"]["user_key"] == "u-1"


async def test_a_verification_naming_a_device_and_its_install_in_one_batch(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    """The verification links the device before the install is decided: the install is
    the user's from the start."""

    def scenario(app_id: str, tokens: list[str]) -> list[Contract]:
        return [
            UserVerified(
                app_id=app_id,
                verification_id="v-1",
                user_id="u-1",
                device_id="phone",
                ts=T - timedelta(minutes=1),
            ),
            click(app_id, tokens[0], "c-1", minutes=-30),
            install(app_id, "i-1", "phone", minutes=0, adid="ad-1", referrer="click_id=c-1"),
        ]

    rows, said = await together_and_one_by_one(settings, sessions, producer, scenario)
    assert rows["i-1"][1] == "u-1"
    assert kinds(rows, "i-1") == [("click_id", "new_user", "attributed", 0, [])]
    assert said["i-1"]["user_key"] == "u-1"


async def test_a_replayed_batch_writes_and_publishes_the_same(
    settings: PlatformSettings,
    sessions: async_sessionmaker[AsyncSession],
    producer: RecordingProducer,
) -> None:
    app_id, tokens = await new_app(settings, sessions, fraud={"max_installs_per_ip_hour": 1})
    batch = Batch(
        records=records(
            [
                click(app_id, tokens[0], "c-1", minutes=-60, adid="ad-1"),
                install(app_id, "i-1", "a", minutes=0, adid="ad-1", ip="5.1.1.1"),
                install(app_id, "i-2", "b", minutes=1, adid="ad-1", ip="5.1.1.1"),
                install(app_id, "i-3", "c", minutes=2, user_id="u", referrer="click_id=c-1"),
                install(app_id, "i-4", "d", minutes=3, user_id="u", adid="ad-4"),
            ]
        )
    )
    matcher = Matcher(sessions, producer)
    runs = []
    for _ in range(2):
        producer.published.clear()
        await matcher(batch)
        runs.append(
            ([encode(m) for m in producer.published], await ledger(sessions, app_id, tokens))
        )
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 4
