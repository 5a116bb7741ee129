"""journey: the durable engine — versions, runs with timers, tasks, schedules, limits,
stats, device links and geofence states

Revision ID: 0018_journey
Revises: 0021_ident
Create Date: 2026-12-08 12:00:00.000000

Additive for stored journeys: each gets version 1 (its current trigger and definition,
still in the legacy ``steps`` form, which the engine parses); runs made before the
engine are ``completed`` and keep counting for the entry rules.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018_journey"
down_revision: str | None = "0021_ident"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = postgresql.JSONB(astext_type=sa.Text())
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "journeys", sa.Column("version", sa.Integer(), server_default="1", nullable=False)
    )
    op.add_column(
        "journeys",
        sa.Column("kind", sa.String(length=16), server_default="journey", nullable=False),
    )
    op.create_table(
        "journey_versions",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trigger", JSONB, nullable=False),
        sa.Column("definition", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "journey_id", "version", name=op.f("pk_journey_versions")
        ),
    )
    op.execute(
        "INSERT INTO journey_versions "
        "(app_id, journey_id, version, trigger, definition, created_at) "
        "SELECT app_id, id, 1, trigger, definition, created_at FROM journeys"
    )

    for name, column in (
        ("version", sa.Column("version", sa.Integer(), server_default="1", nullable=False)),
        ("node", sa.Column("node", sa.String(length=64), nullable=True)),
        ("wake_at", sa.Column("wake_at", TS, nullable=True)),
        ("held", sa.Column("held", sa.Boolean(), server_default="false", nullable=False)),
        ("waiting_for", sa.Column("waiting_for", sa.String(length=128), nullable=True)),
        ("variant", sa.Column("variant", sa.String(length=64), nullable=True)),
        (
            "trigger",
            sa.Column("trigger", JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        ),
        (
            "visits",
            sa.Column("visits", JSONB, server_default=sa.text("'{}'::jsonb"), nullable=False),
        ),
        ("exit_reason", sa.Column("exit_reason", sa.String(length=32), nullable=True)),
        ("ended_at", sa.Column("ended_at", TS, nullable=True)),
    ):
        del name
        op.add_column("journey_runs", column)
    op.create_index(
        "ix_journey_runs_journey", "journey_runs", ["app_id", "journey_id", "status"], unique=False
    )
    op.create_index(
        "ix_journey_runs_due",
        "journey_runs",
        ["wake_at"],
        unique=False,
        postgresql_where=sa.text("wake_at IS NOT NULL AND NOT held"),
    )

    op.create_table(
        "journey_tasks",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("user_key", sa.String(length=200), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("app_id", "task_id", name=op.f("pk_journey_tasks")),
    )
    op.create_index("ix_journey_tasks_due", "journey_tasks", ["due_at"], unique=False)

    op.create_table(
        "journey_schedules",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("covered_until", TS, nullable=True),
        sa.Column("firing_at", TS, nullable=True),
        sa.Column("cursor", sa.String(length=200), nullable=True),
        sa.Column("entered", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("firings", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("app_id", "journey_id", name=op.f("pk_journey_schedules")),
    )
    op.create_index("ix_journey_schedules_due", "journey_schedules", ["due_at"], unique=False)

    op.create_table(
        "journey_send_counts",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("next_slot", TS, nullable=True),
        sa.PrimaryKeyConstraint("app_id", "journey_id", "day", name=op.f("pk_journey_send_counts")),
    )
    op.create_table(
        "journey_node_stats",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("entered", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("capped", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "journey_id", "node_id", "variant", name=op.f("pk_journey_node_stats")
        ),
    )
    op.create_table(
        "journey_device_links",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("user_key", sa.String(length=200), nullable=False),
        sa.Column("linked_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "device_id", name=op.f("pk_journey_device_links")),
    )
    op.create_index(
        "ix_journey_device_links_user", "journey_device_links", ["app_id", "user_key"], unique=False
    )
    op.create_table(
        "journey_seen_events",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "event_id", name=op.f("pk_journey_seen_events")),
    )
    op.create_table(
        "journey_geofence_states",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("user_key", sa.String(length=200), nullable=False),
        sa.Column("inside", sa.Boolean(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "journey_id", "user_key", name=op.f("pk_journey_geofence_states")
        ),
    )


def downgrade() -> None:
    op.drop_table("journey_geofence_states")
    op.drop_table("journey_seen_events")
    op.drop_index("ix_journey_device_links_user", table_name="journey_device_links")
    op.drop_table("journey_device_links")
    op.drop_table("journey_node_stats")
    op.drop_table("journey_send_counts")
    op.drop_index("ix_journey_schedules_due", table_name="journey_schedules")
    op.drop_table("journey_schedules")
    op.drop_index("ix_journey_tasks_due", table_name="journey_tasks")
    op.drop_table("journey_tasks")
    op.drop_index("ix_journey_runs_due", table_name="journey_runs")
    op.drop_index("ix_journey_runs_journey", table_name="journey_runs")
    for column in (
        "ended_at",
        "exit_reason",
        "visits",
        "trigger",
        "variant",
        "waiting_for",
        "held",
        "wake_at",
        "node",
        "version",
    ):
        op.drop_column("journey_runs", column)
    op.drop_table("journey_versions")
    op.drop_column("journeys", "kind")
    op.drop_column("journeys", "version")
