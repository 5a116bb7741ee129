"""FastAPI dependencies over the process's ``Resources`` (``app.state.resources``).

``SessionDep`` owns the transaction: it commits when the endpoint returns normally — before
the response is sent, so a 201 means the row exists — and rolls back when it raises. Store
functions never commit. Work that must follow the commit (publishing ConfigChanged) is
registered with ``after_commit``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from libs.runtime.clickhouse import AsyncClickHouse
from libs.runtime.kafka import Producer
from libs.runtime.resources import Resources
from libs.runtime.settings import PlatformSettings


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    hooks: list[Callable[[], Awaitable[None]]] = []
    request.state.after_commit = hooks
    async with get_resources(request).sessions() as session:
        async with session.begin():
            yield session
        for hook in hooks:
            await hook()


def after_commit(request: Request, hook: Callable[[], Awaitable[None]]) -> None:
    """Run ``hook`` once the request's transaction has committed (not if it rolls back)."""
    hooks: list[Callable[[], Awaitable[None]]] = request.state.after_commit
    hooks.append(hook)


# Dependencies are ``async def`` although they do not await: FastAPI runs a plain
# ``def`` dependency in its thread pool, a thread hop per request (measured on ingest).
async def get_producer(request: Request) -> Producer:
    return get_resources(request).producer


async def get_clickhouse(request: Request) -> AsyncClickHouse:
    return get_resources(request).require_clickhouse()


async def get_settings(request: Request) -> PlatformSettings:
    return get_resources(request).settings


async def resources_dependency(request: Request) -> Resources:
    return get_resources(request)


ResourcesDep = Annotated[Resources, Depends(resources_dependency)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ProducerDep = Annotated[Producer, Depends(get_producer)]
ClickHouseDep = Annotated[AsyncClickHouse, Depends(get_clickhouse)]
SettingsDep = Annotated[PlatformSettings, Depends(get_settings)]
