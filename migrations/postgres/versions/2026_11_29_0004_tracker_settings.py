"""trackers: attribution windows, counting mode, cost, postbacks, redirect allow-list

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 16:30:00.000000

Additive: new columns with server defaults, safe while services run.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EMPTY_LIST = sa.text("'[]'::jsonb")


def upgrade() -> None:
    op.add_column(
        "trackers",
        sa.Column("click_window_hours", sa.Integer(), server_default="168", nullable=False),
    )
    op.add_column(
        "trackers",
        sa.Column("fingerprint_window_hours", sa.Integer(), server_default="24", nullable=False),
    )
    op.add_column(
        "trackers",
        sa.Column("view_window_hours", sa.Integer(), server_default="24", nullable=False),
    )
    op.add_column(
        "trackers",
        sa.Column("counting", sa.String(16), server_default="on_install", nullable=False),
    )
    op.add_column("trackers", sa.Column("cost_model", sa.String(16), nullable=True))
    op.add_column("trackers", sa.Column("cost_amount", sa.Numeric(18, 4), nullable=True))
    op.add_column("trackers", sa.Column("cost_currency", sa.String(3), nullable=True))
    op.add_column(
        "trackers",
        sa.Column("postback_urls", postgresql.JSONB(), server_default=EMPTY_LIST, nullable=False),
    )
    op.add_column(
        "trackers",
        sa.Column(
            "redirect_domains", postgresql.JSONB(), server_default=EMPTY_LIST, nullable=False
        ),
    )


def downgrade() -> None:
    for column in (
        "redirect_domains",
        "postback_urls",
        "cost_currency",
        "cost_amount",
        "cost_model",
        "counting",
        "view_window_hours",
        "fingerprint_window_hours",
        "click_window_hours",
    ):
        op.drop_column("trackers", column)
