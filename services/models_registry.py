"""Imports every module that declares tables, so ``Base.metadata`` knows them all
(Alembic autogenerate, the schema snapshot test)."""

from __future__ import annotations

import importlib

TABLE_MODULES = (
    "libs.runtime.tenancy",
    "libs.runtime.tables",
    "services.attribution.store",
    "services.attribution.postback_store",
    "services.ingest.store",
    "services.segmenter.store",
    "services.journey.store",
    "services.dispatcher.store",
    "services.dispatcher.credentials_store",
)


def load_all() -> None:
    for name in TABLE_MODULES:
        importlib.import_module(name)
