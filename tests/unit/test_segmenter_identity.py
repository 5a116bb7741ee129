"""Identity in the segmenter: attribute writes in any order, routing records to profiles
through device aliases, and merging an anonymous device profile into its user's."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.rules.profile import ProfileState
from libs.schemas import Event, UserAttributed
from services.segmenter.consumer import seen_key
from services.segmenter.identity import (
    Alias,
    Sighting,
    merge_attributes,
    merge_profiles,
    route,
    unite_tokens,
)
from services.segmenter.logic import MAX_ATTRIBUTES, MAX_TOKENS, apply_event, fold_attributes

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ids = itertools.count()


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def event(name: str = "x", ts: datetime = NOW, device: str | None = "dev_1", **kw: Any) -> Event:
    return Event(
        app_id="app",
        event_id=f"e{next(ids)}",
        name=name,
        ts=ts,
        received_at=NOW,
        device_id=device,
        **kw,
    )


def fold(*events: Event, state: ProfileState | None = None) -> ProfileState:
    state = state or ProfileState()
    for e in events:
        state = apply_event(state, e)
    return state


def attrs_event(ts: datetime, **props: Any) -> Event:
    return event("$attributes", ts=ts, props=props)


# --- attribute writes in any order --------------------------------------------------------


def test_an_older_set_arriving_late_does_not_overwrite() -> None:
    state = fold(
        attrs_event(at(10), set={"city": "Tehran"}), attrs_event(at(5), set={"city": "Qom"})
    )
    assert state.attributes == {"city": "Tehran"}
    assert state.attribute_writes["city"] == [at(10).isoformat(), "set"]


def test_an_unset_leaves_a_tombstone_older_writes_cannot_pass() -> None:
    state = fold(attrs_event(at(10), unset=["city"]), attrs_event(at(5), set={"city": "Qom"}))
    assert state.attributes == {}
    assert state.attribute_writes["city"] == [at(10).isoformat(), "unset"]
    newer = fold(attrs_event(at(11), set={"city": "Karaj"}), state=state)
    assert newer.attributes == {"city": "Karaj"}


def test_the_earliest_set_once_wins_in_any_order() -> None:
    late_first = fold(
        attrs_event(at(10), set_once={"signup": "b"}), attrs_event(at(5), set_once={"signup": "a"})
    )
    in_order = fold(
        attrs_event(at(5), set_once={"signup": "a"}), attrs_event(at(10), set_once={"signup": "b"})
    )
    assert late_first.attributes == in_order.attributes == {"signup": "a"}


def test_a_set_replaces_a_set_once_value_even_an_older_set() -> None:
    # In time order the set came first, and the set_once found the attribute present.
    state = fold(
        attrs_event(at(10), set_once={"tier": "free"}), attrs_event(at(5), set={"tier": "gold"})
    )
    assert state.attributes == {"tier": "gold"}


def test_increments_commute_but_a_later_set_absorbs_older_ones() -> None:
    a = fold(attrs_event(at(1), increment={"n": 2}), attrs_event(at(2), increment={"n": 3}))
    b = fold(attrs_event(at(2), increment={"n": 3}), attrs_event(at(1), increment={"n": 2}))
    assert a.attributes == b.attributes == {"n": 5}
    state = fold(attrs_event(at(10), set={"n": 100}), attrs_event(at(5), increment={"n": 1}))
    assert state.attributes == {"n": 100}
    state = fold(attrs_event(at(11), increment={"n": 1}), state=state)
    assert state.attributes == {"n": 101}


def test_tombstones_are_bounded_newest_kept() -> None:
    names = [f"k{i}" for i in range(MAX_ATTRIBUTES + 10)]
    attrs, writes, _ = fold_attributes({}, {}, {"unset": names[:5]}, at(0))
    attrs, writes, _ = fold_attributes(attrs, writes, {"unset": names[5:]}, at(1))
    assert attrs == {} and len(writes) == MAX_ATTRIBUTES
    assert set(names[-MAX_ATTRIBUTES:]) == set(writes)


def test_marks_without_a_valid_time_count_as_oldest() -> None:
    attrs, _, written = fold_attributes(
        {"a": 1},
        {"a": ["not a time", "set"], "b": 5},
        {"set": {"a": 2, "b": 3}},
        at(0),  # type: ignore[dict-item]
    )
    assert attrs == {"a": 2, "b": 3} and written == {"a", "b"}


OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["set", "unset"]),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda op: op[2],  # distinct times: a tie has no order to recover
)


def _op_event(name: str, op: str, value: int, ts: datetime) -> Event:
    props = {"set": {name: value}} if op == "set" else {"unset": [name]}
    return attrs_event(ts, **props)


@given(OPS, st.randoms(use_true_random=False))
def test_sets_and_unsets_fold_to_the_same_attributes_in_any_order(
    ops: list[tuple[str, str, int]], rnd: Any
) -> None:
    events = [_op_event(n, op, t, at(t)) for n, op, t in ops]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert fold(*events).attributes == fold(*shuffled).attributes
    # ... and the answer is the latest write of each attribute
    latest: dict[str, tuple[int, str]] = {}
    for name, op, t in ops:
        if name not in latest or t > latest[name][0]:
            latest[name] = (t, op)
    assert fold(*events).attributes == {n: t for n, (t, op) in latest.items() if op == "set"}


# --- events from admin ---------------------------------------------------------------------


def test_admin_edits_are_not_activity() -> None:
    state = fold(event("$open", ts=at(0), platform="ios"))
    edited = fold(
        event(
            "$attributes",
            ts=at(60),
            device=None,
            user_id="u1",
            source="admin",
            platform="web",
            props={"set": {"vip": True}},
        ),
        state=state,
    )
    assert edited.attributes == {"vip": True}
    assert (edited.events, edited.last_seen, edited.platform) == (1, at(0), "ios")


def test_unsetting_a_contact_removes_it_and_an_older_set_does_not_bring_it_back() -> None:
    state = fold(attrs_event(at(0), set={"phone": "+989121234567", "email": "a@b.ir"}))
    cleared = fold(attrs_event(at(10), unset=["phone"]), state=state)
    assert (cleared.phone, cleared.email) == (None, "a@b.ir")
    late = fold(attrs_event(at(5), set={"phone": "+989120000000"}), state=cleared)
    assert late.phone is None and "phone" not in late.attributes


def test_an_older_contact_arriving_late_does_not_replace_a_newer_one() -> None:
    state = fold(
        attrs_event(at(10), set={"email": "new@b.ir"}),
        attrs_event(at(5), set={"email": "old@b.ir"}),
    )
    assert state.email == "new@b.ir"


# --- routing -------------------------------------------------------------------------------


def seen(
    device: str | None, user: str | None = None, t: float = 0, *, fresh: bool = True
) -> Sighting:
    return Sighting(device, user, at(t), f"c{next(ids)}", fresh=fresh)


def test_anonymous_records_before_a_login_in_the_same_batch_fold_into_the_user() -> None:
    routing = route([seen("D"), seen("D", "U", 1), seen("D", t=2)], {})
    assert routing.targets == ["U", "U", "U"]
    [link] = routing.links
    assert (link.device_id, link.user_key, link.previous, link.merges) == ("D", "U", "d:D", True)
    assert routing.aliases == {"D": Alias("U", at(1))}


def test_a_device_with_an_anonymous_alias_merges_on_login() -> None:
    routing = route([seen("D", "U", 5)], {"D": Alias("d:D")})
    [link] = routing.links
    assert link.merges and link.previous == "d:D" and link.anonymous_key == "d:D"


def test_after_login_anonymous_records_follow_the_alias_even_older_ones() -> None:
    routing = route([seen("D", t=-100), seen("D", t=50)], {"D": Alias("U", at(0))})
    assert routing.targets == ["U", "U"]
    assert routing.links == [] and routing.aliases == {}


def test_a_shared_phone_moves_to_the_new_user_without_a_merge() -> None:
    routing = route([seen("D", t=1), seen("D", "U2", 2), seen("D", t=3)], {"D": Alias("U1", at(0))})
    assert routing.targets == ["U1", "U2", "U2"]
    [link] = routing.links
    assert (link.previous, link.merges) == ("U1", False)
    assert routing.aliases == {"D": Alias("U2", at(2))}


def test_an_older_login_of_another_user_does_not_move_the_device() -> None:
    routing = route([seen("D", "U2", -10)], {"D": Alias("U1", at(0))})
    assert routing.targets == ["U2"]  # the event is U2's own
    assert routing.links == [] and routing.aliases == {}


def test_replays_change_no_alias() -> None:
    routing = route([seen("D", "U", 5, fresh=False)], {"D": Alias("d:D")})
    assert routing.targets == ["U"] and routing.links == [] and routing.aliases == {}
    routing = route([seen("D", fresh=False)], {})
    assert routing.targets == ["d:D"] and routing.aliases == {}


def test_the_same_user_later_refreshes_the_link_time() -> None:
    routing = route([seen("D", "U", 5), seen("D", "U", 3)], {"D": Alias("U", at(0))})
    assert routing.links == [] and routing.aliases == {"D": Alias("U", at(5))}


def test_a_new_anonymous_device_gets_an_anonymous_alias_and_user_records_without_device() -> None:
    routing = route([seen("D"), seen(None, "U")], {})
    assert routing.targets == ["d:D", "U"]
    assert routing.aliases == {"D": Alias("d:D")}


def test_a_sighting_without_ids_is_refused() -> None:
    with pytest.raises(ValueError):
        route([Sighting(None, None, NOW, "x")], {})


# --- merging -------------------------------------------------------------------------------


def marks(**named: tuple[float, str]) -> dict[str, list[str]]:
    return {name: [at(t).isoformat(), op] for name, (t, op) in named.items()}


@pytest.mark.parametrize(
    ("user", "anonymous", "expected"),
    [
        # latest write wins, either side
        (({"a": 1}, marks(a=(1, "set"))), ({"a": 2}, marks(a=(2, "set"))), {"a": 2}),
        (({"a": 1}, marks(a=(3, "set"))), ({"a": 2}, marks(a=(2, "set"))), {"a": 1}),
        # a tie: the user's
        (({"a": 1}, marks(a=(2, "set"))), ({"a": 2}, marks(a=(2, "set"))), {"a": 1}),
        # a later unset removes; an earlier one does not
        (({}, marks(a=(3, "unset"))), ({"a": 2}, marks(a=(2, "set"))), {}),
        (({}, marks(a=(1, "unset"))), ({"a": 2}, marks(a=(2, "set"))), {"a": 2}),
        # set_once: the earliest of two; any set over a set_once
        (({"a": 1}, marks(a=(5, "once"))), ({"a": 2}, marks(a=(2, "once"))), {"a": 2}),
        (({"a": 1}, marks(a=(1, "once"))), ({"a": 2}, marks(a=(2, "set"))), {"a": 2}),
        (({"a": 1}, marks(a=(5, "set"))), ({"a": 2}, marks(a=(1, "once"))), {"a": 1}),
        (({"a": 1}, marks(a=(1, "set"))), ({"a": 2}, marks(a=(5, "once"))), {"a": 1}),
        # no write time (stored before times were kept) is the oldest
        (({"a": 1}, {}), ({"a": 2}, marks(a=(0, "set"))), {"a": 2}),
        (({"a": 1}, {}), ({"b": 2}, {}), {"a": 1, "b": 2}),
    ],
)
def test_merge_attributes(
    user: tuple[dict[str, Any], dict[str, list[str]]],
    anonymous: tuple[dict[str, Any], dict[str, list[str]]],
    expected: dict[str, Any],
) -> None:
    assert merge_attributes(user, anonymous)[0] == expected


WRITTEN = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.tuples(st.integers(0, 3), st.sampled_from(["set", "once", "inc", "unset"]), st.integers()),
    max_size=3,
)


def as_pair(
    written: dict[str, tuple[int, str, int]],
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    values = {n: v for n, (_, op, v) in written.items() if op != "unset"}
    return values, {n: [at(t).isoformat(), op] for n, (t, op, _) in written.items()}


@given(WRITTEN)
def test_merging_attributes_with_themselves_changes_nothing(written: Any) -> None:
    pair = as_pair(written)
    merged, writes, _ = merge_attributes(pair, pair)
    assert (merged, writes) == pair


@given(WRITTEN, WRITTEN)
def test_merging_attributes_without_ties_is_symmetric(left: Any, right: Any) -> None:
    for name in set(left) & set(right):
        if left[name][0] == right[name][0]:
            return  # a tie goes to the user's side by design
    a, b = as_pair(left), as_pair(right)
    assert merge_attributes(a, b)[:2] == merge_attributes(b, a)[:2]


def token(device: str, value: str, t: float, provider: str | None = "fcm") -> dict[str, Any]:
    entry: dict[str, Any] = {"device_id": device, "token": value}
    if provider:
        entry["provider"] = provider
    return {**entry, "valid": True, "updated_at": at(t).isoformat()}


def test_tokens_are_united_one_per_token_and_per_device_newest_winning() -> None:
    user = [token("D1", "t1", 1), token("D2", "t2", 2)]
    anonymous = [token("D3", "t3", 3), token("D1", "t1b", 4), token("D9", "t2", 5)]
    united = unite_tokens(user, anonymous)
    assert [(e["device_id"], e["token"]) for e in united] == [
        ("D3", "t3"),
        ("D1", "t1b"),
        ("D9", "t2"),
    ]


def test_tokens_are_capped_newest_kept() -> None:
    many = [token(f"D{i}", f"t{i}", i) for i in range(MAX_TOKENS + 5)]
    united = unite_tokens(many[:10], many[10:])
    assert [e["token"] for e in united] == [f"t{i}" for i in range(5, MAX_TOKENS + 5)]


TOKENS = st.lists(
    st.builds(
        token,
        st.sampled_from(["D1", "D2", "D3"]),
        st.sampled_from(["t1", "t2", "t3", "t4"]),
        st.integers(0, 100),
        st.sampled_from(["fcm", "apns"]),
    ),
    max_size=8,
)


@given(TOKENS, TOKENS)
def test_united_tokens_are_unique_and_uniting_again_changes_nothing(
    left: list[dict[str, Any]], right: list[dict[str, Any]]
) -> None:
    united = unite_tokens(left, right)
    assert len({e["token"] for e in united}) == len(united)
    assert len({(e["device_id"], e["provider"]) for e in united}) == len(united)
    assert unite_tokens(united, united) == united
    assert unite_tokens(united) == united


def test_merge_profiles_rules() -> None:
    user = ProfileState(
        user_id="U",
        attributes={"city": "Tehran"},
        attribute_writes=marks(city=(100, "set")),
        first_seen=at(50),
        last_seen=at(200),
        platform="ios",
        app_version="2.0",
        attribution=None,
        sessions=3,
        purchases=1,
        revenue=10.5,
        events=9,
        push_permission=None,
        push_tokens=[token("D0", "u-token", 150, "apns")],
        email="u@b.ir",
        opt_outs=["sms"],
        last_lat=1.0,
        last_lon=1.0,
        last_location_at=at(10),
    )
    anonymous = ProfileState(
        attributes={"city": "Qom", "lang": "fa"},
        attribute_writes=marks(city=(20, "set"), lang=(20, "set")),
        first_seen=at(0),
        last_seen=at(30),
        platform="android",
        locale="fa-IR",
        attribution={"install_event_id": "i1", "tracker_token": "tok"},
        sessions=2,
        purchases=2,
        revenue=4.5,
        events=5,
        push_permission=True,
        push_tokens=[token("D", "a-token", 25)],
        phone="+989121234567",
        opt_outs=["email"],
        last_lat=35.7,
        last_lon=51.4,
        last_location_at=at(25),
    )
    merged = merge_profiles(user, anonymous)
    assert merged.user_id == "U"
    assert merged.attributes == {"city": "Tehran", "lang": "fa"}
    assert (merged.first_seen, merged.last_seen) == (at(0), at(200))
    assert (merged.sessions, merged.purchases, merged.revenue, merged.events) == (5, 3, 15.0, 14)
    # device fields: the more recently seen profile's, where it has them
    assert (merged.platform, merged.app_version, merged.locale) == ("ios", "2.0", "fa-IR")
    assert merged.push_permission is True
    assert [t["token"] for t in merged.push_tokens] == ["a-token", "u-token"]
    assert (merged.phone, merged.email) == ("+989121234567", "u@b.ir")
    assert merged.opt_outs == ["email", "sms"]
    assert merged.attribution == {"install_event_id": "i1", "tracker_token": "tok"}
    assert (merged.last_lat, merged.last_lon, merged.last_location_at) == (35.7, 51.4, at(25))
    kept = merge_profiles(
        ProfileState(user_id="U", attribution={"install_event_id": "i0"}), anonymous
    )
    assert kept.attribution == {"install_event_id": "i0"}


def test_a_contact_the_winner_unset_stays_unset() -> None:
    user = ProfileState(user_id="U", attribute_writes=marks(phone=(50, "unset")), last_seen=at(60))
    anonymous = ProfileState(
        attributes={"phone": "+98912"}, attribute_writes=marks(phone=(10, "set")), phone="+98912"
    )
    assert merge_profiles(user, anonymous).phone is None
    assert merge_profiles(ProfileState(user_id="U"), anonymous).phone == "+98912"


EVENT_KINDS = st.sampled_from(["$open", "$purchase", "custom", "set", "unset"])


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """Events of one user at distinct times: sessions, purchases, attribute writes."""
    times = draw(st.lists(st.integers(-1000, 1000), min_size=1, max_size=8, unique=True))
    events = []
    for t in times:
        kind = draw(EVENT_KINDS)
        name = draw(st.sampled_from(["a", "b"]))
        if kind == "$purchase":
            events.append(
                event(
                    "$purchase", ts=at(t), revenue=float(draw(st.integers(0, 99))), currency="IRR"
                )
            )
        elif kind in ("set", "unset"):
            events.append(_op_event(name, kind, t, at(t)))
        else:
            events.append(event(kind, ts=at(t)))
    return events


@settings(max_examples=200)
@given(histories(), histories())
def test_merging_two_folded_profiles_equals_folding_every_event_into_one(
    user_events: list[Event], device_events: list[Event]
) -> None:
    times = [e.ts for e in user_events + device_events]
    if len(set(times)) != len(times):
        return  # a tie between the two profiles' writes is decided for the user
    user = fold(*user_events, state=ProfileState(user_id="U"))
    merged = merge_profiles(user, fold(*device_events))
    together = fold(*user_events, *device_events, state=ProfileState(user_id="U"))
    for name in ("events", "sessions", "purchases", "first_seen", "last_seen", "attributes"):
        assert getattr(merged, name) == getattr(together, name), name
    assert merged.revenue == pytest.approx(together.revenue)


@given(histories(), histories())
def test_merge_never_moves_last_seen_back_and_sums_counters_exactly(
    user_events: list[Event], device_events: list[Event]
) -> None:
    user = fold(*user_events, state=ProfileState(user_id="U"))
    anonymous = fold(*device_events)
    merged = merge_profiles(user, anonymous)
    assert merged.last_seen is not None and user.last_seen is not None
    assert merged.last_seen >= user.last_seen and merged.last_seen >= anonymous.last_seen  # type: ignore[operator]
    assert merged.first_seen == min(user.first_seen, anonymous.first_seen)  # type: ignore[type-var]
    for name in ("events", "sessions", "purchases"):
        assert getattr(merged, name) == getattr(user, name) + getattr(anonymous, name)
    assert merged.revenue == user.revenue + anonymous.revenue


@given(histories())
def test_merging_an_empty_profile_changes_nothing(device_events: list[Event]) -> None:
    user = fold(*device_events, state=ProfileState(user_id="U"))
    assert merge_profiles(user, ProfileState()) == user


def test_attribution_statements_are_remembered_by_their_whole_content() -> None:
    base: dict[str, Any] = dict(
        app_id="app",
        attribution_id="a1",
        user_key="u1",
        device_id="D",
        install_event_id="i1",
        install_ts=NOW,
        attributed_at=NOW,
        method="click_id",
        kind="new_user",
        status="pending",
    )
    pending = UserAttributed(**base)
    # The login's restatement and the verification it settles share id and instant.
    verified = UserAttributed(**{**base, "status": "verified"})
    assert seen_key(pending) == seen_key(UserAttributed(**base))
    assert seen_key(pending) != seen_key(verified)


def test_entries_into_segments_the_merged_profile_was_in_carry_it() -> None:
    from libs.schemas import SegmentChanged
    from services.segmenter.identity import mark_carried

    at = datetime(2024, 5, 1, tzinfo=UTC)

    def change(user: str, segment: str, kind: str = "entered") -> SegmentChanged:
        return SegmentChanged(
            app_id="a",
            change_id=f"c-{user}-{segment}",
            user_key=user,
            segment_id=segment,
            change=kind,
            ts=at,
        )

    changes = [
        change("u1", "welcome"),  # the anonymous profile was in it: carried
        change("u1", "buyers"),  # it was not: new to the user
        change("u1", "dormant", "exited"),  # exits never carry
        change("u2", "welcome"),  # another user
    ]
    carried = {"u1": {"welcome": "d:phone", "dormant": "d:phone"}}
    marked = mark_carried(changes, carried)
    assert [c.merged_from for c in marked] == ["d:phone", None, None, None]
    assert [c.model_copy(update={"merged_from": None}) for c in marked] == changes
    assert mark_carried(changes, {}) == changes
