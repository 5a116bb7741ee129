"""Admin's ClickHouse reads. Every query is scoped by app and uses FINAL so that
replayed rows (ReplacingMergeTree) are counted once."""

from __future__ import annotations

from typing import Any

from libs.runtime.clickhouse import AsyncClickHouse


async def deliveries_of(
    ch: AsyncClickHouse, *, app_id: str, user_key: str, limit: int = 100
) -> list[dict[str, Any]]:
    return await ch.query_rows(
        f"SELECT receipt_id, job_id, channel, status, provider, provider_message_id, error, "
        f"journey_id, ts FROM {ch.database}.deliveries FINAL "
        "WHERE app_id = {app_id:String} AND user_key = {user_key:String} "
        "ORDER BY ts DESC LIMIT {limit:UInt32}",
        {"app_id": app_id, "user_key": user_key, "limit": limit},
    )
