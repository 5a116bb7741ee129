"""FastAPI dependencies over the process's ``Resources`` (``app.state.resources``).

``SessionDep`` owns the transaction: it commits when the endpoint returns normally and
rolls back when it raises. Store functions never commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
    async with get_resources(request).sessions() as session, session.begin():
        yield session


def get_producer(request: Request) -> Producer:
    return get_resources(request).producer


def get_clickhouse(request: Request) -> AsyncClickHouse:
    return get_resources(request).require_clickhouse()


def get_settings(request: Request) -> PlatformSettings:
    return get_resources(request).settings


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
ProducerDep = Annotated[Producer, Depends(get_producer)]
ClickHouseDep = Annotated[AsyncClickHouse, Depends(get_clickhouse)]
SettingsDep = Annotated[PlatformSettings, Depends(get_settings)]
