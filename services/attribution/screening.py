"""Gathering what the fraud rules judge an install by: the app's thresholds and the
counts from the clicks index and the install ledger. The rules themselves are pure
(``fraud.check_install``); this is the I/O edge that feeds them."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.signing import Verdict
from services.attribution import fraud, logic, store

CLICK_METHODS = frozenset({"click_id", "adid", "fingerprint"})


async def fraud_reasons(
    session: AsyncSession,
    *,
    configs: dict[str, fraud.FraudConfig],
    datacenter: fraud.NetworkSet,
    app_id: str,
    event_id: str,
    facts: logic.InstallFacts,
    decision: logic.Decision,
) -> list[str]:
    """The install's fraud reasons under the app's thresholds (read once into
    ``configs``, the caller's per-batch cache), in ``fraud.REASONS`` order. Per-IP counts use only
    public addresses (``fraud.countable_ip``). An install no SDK signature check saw
    (a server-to-server ``$install``, a backend publishing to ``installs``) is not
    held to the app's signing requirement: its sender authenticated otherwise."""
    config = configs.get(app_id)
    if config is None:
        stored, signed = await store.app_fraud_settings(session, app_id=app_id)
        config = configs[app_id] = fraud.config_from(stored, require_signature=signed)
    if facts.signature is None and config.require_signature:
        config = replace(config, require_signature=False)
    click = decision.click if decision.method in CLICK_METHODS else None
    clicks_per_hour = 0
    if click is not None:
        clicks_per_hour = await store.clicks_in_hour(
            session,
            app_id=app_id,
            tracker_token=click.tracker_token,
            ip=click.ip if fraud.countable_ip(click.ip) else None,
            adid=logic.clean_adid(click.adid),
            until=click.ts,
        )
    from_ip = 0
    if fraud.countable_ip(facts.ip):
        assert facts.ip is not None
        from_ip = await store.installs_from_ip(
            session, app_id=app_id, ip=facts.ip, install_event_id=event_id, until=facts.ts
        )
    signals = fraud.InstallSignals(
        install_ts=facts.ts,
        ip=facts.ip,
        user_agent=facts.user_agent,
        click_ts=click.ts if click is not None else None,
        install_begin_ts=facts.install_begin_ts,
        clicks_per_hour=clicks_per_hour,
        installs_from_ip_last_hour=from_ip,
        is_emulator=facts.is_emulator,
        is_rooted=facts.is_rooted,
        signature=Verdict(facts.signature) if facts.signature else None,
    )
    return fraud.check_install(signals, config, datacenter=datacenter)
