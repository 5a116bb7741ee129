"""The Alembic history builds exactly the tables the ORM classes declare: a model
changed without a migration (or a migration that differs from its model) fails here,
before it reaches a deployment."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from libs.runtime import postgres
from libs.runtime.postgres import Base
from services import models_registry

pytestmark = pytest.mark.integration


def _relevant(diff: Any) -> bool:
    # Server defaults are compared loosely by Alembic and reported as noise; types,
    # nullability, columns, tables and indexes are what a drift would break.
    kind = diff[0][0] if isinstance(diff, list) else diff[0]
    return kind not in {"modify_default"}


async def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    models_registry.load_all()
    engine = postgres.create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            diffs = await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    drift = [d for d in diffs if _relevant(d)]
    assert drift == [], f"models and migrations differ: {drift!r}"
