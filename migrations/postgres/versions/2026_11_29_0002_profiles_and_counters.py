"""profiles reachability and location, daily counters, recent events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 15:45:00.000000

Hand-written, reviewed against ``alembic revision --autogenerate`` (same tables,
columns and index). Additive: safe while services run. Also creates
``hodhod_iso_timestamp(text)``, the SQL twin of ``libs.rules.semantics.as_date``:
the segment compiler uses it so that both evaluators read the same strings as dates.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EMPTY_LIST = sa.text("'[]'::jsonb")

ISO_TIMESTAMP = r"""
CREATE FUNCTION hodhod_iso_timestamp(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF value !~ ('^[0-9]{4}-[0-9]{2}-[0-9]{2}'
                 '([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?'
                 '(Z|[+-](0[0-9]|1[0-5]):[0-5][0-9])?)?$') THEN
        RETURN NULL;
    END IF;
    IF value ~ '(Z|[+-][0-9]{2}:[0-9]{2})$' THEN
        RETURN value::timestamptz;
    END IF;
    RETURN value::timestamp AT TIME ZONE 'UTC';
EXCEPTION WHEN others THEN
    RETURN NULL;  -- matches the pattern but is no date (2024-02-30)
END
$$
"""


def upgrade() -> None:
    op.add_column("profiles", sa.Column("push_permission", sa.Boolean(), nullable=True))
    for name in ("push_tokens", "web_push", "opt_outs"):
        op.add_column(
            "profiles",
            sa.Column(
                name,
                postgresql.JSONB(astext_type=sa.Text()),
                server_default=EMPTY_LIST,
                nullable=False,
            ),
        )
    op.add_column("profiles", sa.Column("phone", sa.String(length=256), nullable=True))
    op.add_column("profiles", sa.Column("email", sa.String(length=256), nullable=True))
    op.add_column("profiles", sa.Column("last_lat", sa.Float(), nullable=True))
    op.add_column("profiles", sa.Column("last_lon", sa.Float(), nullable=True))
    op.add_column(
        "profiles", sa.Column("last_location_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "segmenter_daily_counters",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("user_key", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "user_key", "name", "day", name=op.f("pk_segmenter_daily_counters")
        ),
    )
    op.create_table(
        "segmenter_recent_events",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("user_key", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("props", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "event_id", name=op.f("pk_segmenter_recent_events")),
    )
    op.create_index(
        "ix_segmenter_recent_events_user",
        "segmenter_recent_events",
        ["app_id", "user_key", "name", "ts"],
        unique=False,
    )
    op.execute(ISO_TIMESTAMP)


def downgrade() -> None:
    op.execute("DROP FUNCTION hodhod_iso_timestamp(text)")
    op.drop_index("ix_segmenter_recent_events_user", table_name="segmenter_recent_events")
    op.drop_table("segmenter_recent_events")
    op.drop_table("segmenter_daily_counters")
    for name in (
        "last_location_at",
        "last_lon",
        "last_lat",
        "email",
        "phone",
        "opt_outs",
        "web_push",
        "push_tokens",
        "push_permission",
    ):
        op.drop_column("profiles", name)
