"""timed work: the segmenter's per-app schedules, the sweep's due index

Revision ID: 0016_timed
Revises: 0015
Create Date: 2026-12-08 02:00:00.000000

Additive. ``segmenter_schedules`` (segmenter's own) holds when each app's segments are
next re-evaluated in bulk, claimed ``FOR UPDATE SKIP LOCKED`` by due time; the scheduler
enrols apps itself, so the table starts empty. ``ix_attribution_installs_pending_due``
serves the verification sweep's claim across apps, oldest pending install first; built
concurrently, outside the migration's transaction, so the ledger stays writable.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_timed"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "segmenter_schedules",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ticked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("app_id", name=op.f("pk_segmenter_schedules")),
    )
    op.create_index(
        "ix_segmenter_schedules_due_at", "segmenter_schedules", ["due_at"], unique=False
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_attribution_installs_pending_due",
            "attribution_installs",
            ["install_ts"],
            postgresql_where=sa.text("status = 'pending'"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_attribution_installs_pending_due",
            table_name="attribution_installs",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_index("ix_segmenter_schedules_due_at", table_name="segmenter_schedules")
    op.drop_table("segmenter_schedules")
