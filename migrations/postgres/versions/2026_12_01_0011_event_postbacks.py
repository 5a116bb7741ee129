"""attribution: in-app event postbacks

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 09:00:00.000000

Additive. A tracker chooses the in-app events posted back to its network
(``trackers.postback_events``), optionally with their own URL templates
(``trackers.event_postback_urls``). ``attribution_postbacks.event_id`` tells an event's
postback attempts from an install's (NULL). ``attribution_postback_holds`` keeps the
chosen events whose install is not attributed yet (not seen, or pending verification)
until it is (see ``services/attribution/postbacks.py``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "trackers",
        sa.Column(
            "postback_events",
            postgresql.JSONB(),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "trackers",
        sa.Column(
            "event_postback_urls",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("attribution_postbacks", sa.Column("event_id", sa.String(128), nullable=True))
    op.create_index(
        "ix_attribution_postbacks_event", "attribution_postbacks", ["app_id", "event_id"]
    )
    op.create_table(
        "attribution_postback_holds",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("adid", sa.String(128), nullable=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revenue", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "event_id", name=op.f("pk_attribution_postback_holds")),
    )
    op.create_index(
        "ix_attribution_postback_holds_device",
        "attribution_postback_holds",
        ["app_id", "device_id"],
    )
    op.create_index(
        "ix_attribution_postback_holds_user", "attribution_postback_holds", ["app_id", "user_id"]
    )
    op.create_index(
        "ix_attribution_postback_holds_held_at",
        "attribution_postback_holds",
        ["app_id", "held_at"],
    )


def downgrade() -> None:
    op.drop_table("attribution_postback_holds")
    op.drop_index("ix_attribution_postbacks_event", table_name="attribution_postbacks")
    op.drop_column("attribution_postbacks", "event_id")
    op.drop_column("trackers", "event_postback_urls")
    op.drop_column("trackers", "postback_events")
