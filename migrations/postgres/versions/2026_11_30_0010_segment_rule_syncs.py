"""segmenter: the rule each segment's memberships were last reconciled with; memberships
by user

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 14:00:00.000000

Additive. ``segmenter_rule_syncs`` lets the scheduler recompute the memberships of a
segment whose rule is new or changed (see ``services/segmenter/scheduler.py``);
``ix_segment_memberships_user`` serves "which segments is this user in" (every event
the segmenter folds, and admin's per-user view).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "segmenter_rule_syncs",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("segment_id", sa.String(length=32), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "segment_id", name=op.f("pk_segmenter_rule_syncs")),
    )
    op.create_index("ix_segment_memberships_user", "segment_memberships", ["app_id", "user_key"])


def downgrade() -> None:
    op.drop_index("ix_segment_memberships_user", table_name="segment_memberships")
    op.drop_table("segmenter_rule_syncs")
