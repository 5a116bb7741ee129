"""attribution: the ledger's pending and waiting installs indexed alone

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 16:00:00.000000

``ix_attribution_installs_status`` (app, status) and ``ix_attribution_installs_ref_click``
(app, referrer click) indexed every install, under a handful of keys — one app, one
status, a null referrer — so each ledger write inserted into long runs of duplicates.
Their only readers ask for installs pending verification (the sweep, a verification) and
for installs whose referrer named a click they did not get (the late-click upgrade): a
partial index of each of those, a small part of the ledger, replaces them. Built
concurrently, outside the migration's transaction, so the ledger stays writable.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
WAITING = sa.text("method <> 'click_id' AND ref_click_id IS NOT NULL")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_attribution_installs_pending",
            "attribution_installs",
            ["app_id", "install_ts"],
            postgresql_where=PENDING,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_attribution_installs_waiting",
            "attribution_installs",
            ["app_id", "ref_click_id"],
            postgresql_where=WAITING,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.drop_index(
            "ix_attribution_installs_status",
            table_name="attribution_installs",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.drop_index(
            "ix_attribution_installs_ref_click",
            table_name="attribution_installs",
            postgresql_concurrently=True,
            if_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_attribution_installs_ref_click",
            "attribution_installs",
            ["app_id", "ref_click_id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.create_index(
            "ix_attribution_installs_status",
            "attribution_installs",
            ["app_id", "status"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.drop_index(
            "ix_attribution_installs_waiting",
            table_name="attribution_installs",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.drop_index(
            "ix_attribution_installs_pending",
            table_name="attribution_installs",
            postgresql_concurrently=True,
            if_exists=True,
        )
