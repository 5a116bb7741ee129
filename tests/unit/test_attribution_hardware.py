"""A user's second device without an advertising id: told from a reinstall by the
hardware it runs on (``logic.hardware``), in ``classify`` (login known at install time),
``reclassify`` (login after it) and the batch ledger's history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.attribution.ledger import BatchLedger, UserInstall
from services.attribution.logic import ClickFacts, Decision, hardware
from services.attribution.outcomes import History, InstallRecord, Outcome, classify, reclassify

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
A536 = "Dalvik/2.1.0 (Linux; U; Android 13; SM-A536E Build/TP1A.220624.014)"
A546 = "Dalvik/2.1.0 (Linux; U; Android 13; SM-A546E Build/TP1A.220624.014)"
CHROME_A536_14 = "Mozilla/5.0 (Linux; Android 14; SM-A536E) AppleWebKit/537.36 Chrome/124"
SAFARI = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15"
ORGANIC = Decision("organic", "organic", "attributed", None)
CLICKED = Decision("click_id", "new_user", "attributed", ClickFacts("c", "other", T))


@pytest.mark.parametrize(
    ("platform", "model", "agent", "expected"),
    [
        ("android", "SM-A546E", None, "android|sm-a546e"),
        ("android", None, A546, "android|sm-a546e"),
        ("android", "SM-A546E", A536, "android|sm-a546e"),  # the SDK's field wins
        (None, None, A536, "android|sm-a536e"),
        ("android", None, CHROME_A536_14, "android|sm-a536e"),  # OS version left out
        ("android", "SM-A536E Build/TP1A.1", None, "android|sm-a536e"),
        ("ios", "iPhone14,5", None, "ios|iphone"),  # Apple: the family only
        ("ios", None, SAFARI, "ios|iphone"),
        ("web", None, SAFARI, "ios|iphone"),
        ("android", "K", None, None),
        ("android", None, "Mozilla/5.0 (Linux; Android 10; K) Chrome/124", None),
        ("web", None, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0", None),
        (None, None, None, None),
    ],
)
def test_hardware(
    platform: str | None, model: str | None, agent: str | None, expected: str | None
) -> None:
    assert hardware(platform, model, agent) == expected


def test_reinstalling_on_the_same_phone_keeps_its_hardware_whatever_reports_it() -> None:
    sdk = hardware("android", "SM-A536E", None)
    assert sdk == hardware("android", None, A536) == hardware(None, None, CHROME_A536_14)
    assert sdk != hardware("android", None, A546)


def known(*kinds: str | None) -> History:
    return History(user_seen=True, user_hardware=frozenset(kinds), original_tracker="orig")


@pytest.mark.parametrize("decision", [ORGANIC, CLICKED])
def test_a_known_user_on_other_hardware_is_a_new_device_under_the_original_tracker(
    decision: Decision,
) -> None:
    h = known("android|sm-a536e")
    assert classify(decision, h, install_ts=T, hardware="android|sm-a546e") == Outcome(
        "new_device", "orig"
    )
    h = known("android|sm-a536e", "ios|iphone")
    assert classify(decision, h, install_ts=T, hardware="android|pixel 8").kind == "new_device"


@pytest.mark.parametrize("decision", [ORGANIC, CLICKED])
def test_same_or_unknown_hardware_is_a_reinstall(decision: Decision) -> None:
    own = decision.click.tracker_token if decision.click else None
    h = known("android|sm-a536e")
    assert classify(decision, h, install_ts=T, hardware="android|sm-a536e") == Outcome(
        "reinstall", own
    )
    assert classify(decision, h, install_ts=T, hardware=None) == Outcome("reinstall", own)
    # One of the user's installs ran on hardware not known: it may be this phone.
    h = known("android|sm-a536e", None)
    assert classify(decision, h, install_ts=T, hardware="android|sm-a546e").kind == "reinstall"
    # Nothing known about the user's hardware (installs recorded before it was kept).
    h = History(user_seen=True, original_tracker="orig")
    assert classify(decision, h, install_ts=T, hardware="android|sm-a546e").kind == "reinstall"


def test_the_advertising_id_outranks_the_hardware() -> None:
    # The same advertising id is the same phone, whatever model it reports.
    h = History(adid_seen=True, user_seen=True, user_hardware=frozenset({"android|sm-a536e"}))
    assert classify(ORGANIC, h, install_ts=T, adid="ad", hardware="android|x").kind == "reinstall"
    # A new advertising id is another device even on the same model.
    h = known("android|sm-a536e")
    same = classify(ORGANIC, h, install_ts=T, adid="ad-2", hardware="android|sm-a536e")
    assert same == Outcome("new_device", "orig")


def test_a_return_after_inactivity_is_a_reattribution_on_any_hardware() -> None:
    h = History(
        user_seen=True,
        user_hardware=frozenset({"android|sm-a536e"}),
        last_active=T - timedelta(days=30),
        original_tracker="orig",
    )
    assert classify(CLICKED, h, install_ts=T, hardware="android|sm-a546e") == Outcome(
        "reattribution", "other"
    )


HARDWARE = st.sampled_from([None, "android|sm-a536e", "android|sm-a546e", "ios|iphone"])
ADIDS = st.sampled_from([None, "ad-1", "ad-2"])


@given(
    earlier=st.lists(st.tuples(ADIDS, HARDWARE), min_size=1, max_size=4),
    adid=ADIDS,
    kind=HARDWARE,
    clicked=st.booleans(),
)
def test_a_known_user_is_never_new_and_a_new_device_is_one_by_adid_or_hardware(
    earlier: list[tuple[str | None, str | None]], adid: str | None, kind: str | None, clicked: bool
) -> None:
    adids = frozenset(a for a, _ in earlier if a)
    seen = frozenset(h for _, h in earlier)
    h = History(
        adid_seen=adid in adids,
        user_seen=True,
        user_adids=adids,
        user_hardware=seen,
        original_tracker="orig",
    )
    out = classify(CLICKED if clicked else ORGANIC, h, install_ts=T, adid=adid, hardware=kind)
    assert out.kind in ("reinstall", "new_device")
    other_adid = adid is not None and adid not in adids
    # The advertising id seen before is the same phone, whatever hardware it reports.
    other_hardware = adid not in adids and kind is not None and None not in seen
    other_hardware = other_hardware and kind not in seen
    assert (out.kind == "new_device") == (other_adid or other_hardware)
    if out.kind == "new_device":
        assert out.tracker_token == "orig"


def record(
    eid: str, ago: timedelta, kind: str, tok: str | None, hw: str | None, adid: str | None = None
) -> InstallRecord:
    click = ClickFacts(f"c-{eid}", tok, T - ago - timedelta(minutes=1)) if tok else None
    method = "click_id" if click else "organic"
    return InstallRecord(eid, T - ago, kind, tok, adid, method, click, hw)


def test_a_login_after_the_install_gives_what_a_login_before_it_gives() -> None:
    """``reclassify`` (login processed after the second device's install) agrees with
    ``classify`` (login first: the user's installs known when the install is decided)."""
    original = record("i1", timedelta(days=1), "new_user", "orig", "android|sm-a536e")
    for hw in ("android|sm-a546e", "android|sm-a536e", None):
        for second in (
            record("i2", timedelta(0), "organic", None, hw),
            record("i2", timedelta(0), "new_user", "other", hw),
        ):
            decision = (
                Decision("click_id", "new_user", "attributed", second.click)
                if second.click
                else ORGANIC
            )
            history = History(
                user_seen=True,
                user_hardware=frozenset({"android|sm-a536e"}),
                last_active=original.install_ts,
                original_tracker="orig",
            )
            assert reclassify(second, [original]) == classify(
                decision, history, install_ts=second.install_ts, hardware=hw
            )
    second = record("i2", timedelta(0), "organic", None, "android|sm-a546e")
    assert reclassify(second, [original]) == Outcome("new_device", "orig")


def test_the_batch_ledger_history_carries_the_user_hardware() -> None:
    row = {
        "app_id": "a",
        "install_event_id": "i-b",
        "user_key": "u",
        "install_ts": T - timedelta(hours=1),
        "adid": None,
        "ip": None,
        "status": "attributed",
        "tracker_token": "orig",
        "hardware": "android|sm-a536e",
    }
    ledger = BatchLedger({("a", "i-b"): row})
    rest = [UserInstall("i-a", T - timedelta(days=1), None, "orig", None)]
    h = ledger.history(
        app_id="a",
        install_event_id="i-c",
        adid=None,
        user_key="u",
        before=T,
        adid_first_seen=None,
        user_installs=rest,
    )
    assert h.user_hardware == frozenset({None, "android|sm-a536e"})
    assert h.original_tracker == "orig"
