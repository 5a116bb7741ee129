"""Gathering what the fraud rules judge an install by: the app's thresholds and the
counts from the clicks index and the install ledger. The rules themselves are pure
(``fraud.check_install``); this is the edge that feeds them, a batch at a time."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.signing import Verdict
from services.attribution import fraud, logic, prefetch

CLICK_METHODS = frozenset({"click_id", "adid", "fingerprint"})


async def load_configs(
    session: AsyncSession, *, configs: dict[str, fraud.FraudConfig], app_ids: Collection[str]
) -> None:
    """Read into ``configs`` (the caller's per-batch cache) the thresholds of the apps
    not in it yet, in one query; an unknown app gets the defaults."""
    missing = {a for a in app_ids if a not in configs}
    if missing:
        stored = await prefetch.fraud_settings(session, app_ids=missing)
        for app_id, (settings, signed) in stored.items():
            configs[app_id] = fraud.config_from(settings, require_signature=signed)


def matched_click(decision: logic.Decision) -> logic.ClickFacts | None:
    """The click the fraud rules look at: a click-through match's (None for organic and
    view-through installs — no click to inject or spam)."""
    return decision.click if decision.method in CLICK_METHODS else None


def click_count_key(app_id: str, decision: logic.Decision) -> prefetch.ClickCount | None:
    """What ``prefetch.clicks_per_hour`` counts for the decision's matched click: its
    tracker's clicks from its IP (public addresses only, ``fraud.countable_ip``) or its
    advertising id in the hour up to it; None without a matched click."""
    click = matched_click(decision)
    if click is None:
        return None
    ip = click.ip if fraud.countable_ip(click.ip) else None
    return (app_id, click.tracker_token, ip, logic.clean_adid(click.adid), click.ts)


def fraud_reasons(
    *,
    config: fraud.FraudConfig,
    datacenter: fraud.NetworkSet,
    facts: logic.InstallFacts,
    decision: logic.Decision,
    clicks_per_hour: int,
    installs_from_ip: int,
) -> list[str]:
    """The install's fraud reasons under the app's thresholds, in ``fraud.REASONS``
    order. ``clicks_per_hour`` is the count for the matched click (``click_count_key``),
    ``installs_from_ip`` the device-farm count including this install (0 for an address
    that is not public). An install no SDK signature check saw (a server-to-server
    ``$install``, a backend publishing to ``installs``) is not held to the app's signing
    requirement: its sender authenticated otherwise."""
    if facts.signature is None and config.require_signature:
        config = replace(config, require_signature=False)
    click = matched_click(decision)
    signals = fraud.InstallSignals(
        install_ts=facts.ts,
        ip=facts.ip,
        user_agent=facts.user_agent,
        click_ts=click.ts if click is not None else None,
        install_begin_ts=facts.install_begin_ts,
        clicks_per_hour=clicks_per_hour if click is not None else 0,
        installs_from_ip_last_hour=installs_from_ip,
        is_emulator=facts.is_emulator,
        is_rooted=facts.is_rooted,
        signature=Verdict(facts.signature) if facts.signature else None,
    )
    return fraud.check_install(signals, config, datacenter=datacenter)
