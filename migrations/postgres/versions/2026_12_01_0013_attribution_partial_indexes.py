"""attribution: partial ledger indexes — by advertising id, pending, waiting

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 16:00:00.000000

``ix_attribution_installs_status`` (app, status), ``ix_attribution_installs_ref_click``
(app, referrer click) and ``ix_attribution_installs_adid`` (app, advertising id) indexed
every install, many under one key — one app and status, a null referrer, a null
advertising id (limited ad tracking) — so each ledger write inserted into long runs of
duplicates. Their readers ask only for installs pending verification (the sweep, a
verification), for installs whose referrer named a click they did not get (the
late-click upgrade) and for installs with a given advertising id: partial indexes of
those replace them. Built concurrently, outside the migration's transaction, so the
ledger stays writable.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
WAITING = sa.text("method <> 'click_id' AND ref_click_id IS NOT NULL")
WITH_ADID = sa.text("adid IS NOT NULL")


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
        op.create_index(
            "ix_attribution_installs_with_adid",
            "attribution_installs",
            ["app_id", "adid"],
            postgresql_where=WITH_ADID,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        for name in ("status", "ref_click", "adid"):
            op.drop_index(
                f"ix_attribution_installs_{name}",
                table_name="attribution_installs",
                postgresql_concurrently=True,
                if_exists=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_attribution_installs_adid",
            "attribution_installs",
            ["app_id", "adid"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
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
        for name in ("pending", "with_adid"):
            op.drop_index(
                f"ix_attribution_installs_{name}",
                table_name="attribution_installs",
                postgresql_concurrently=True,
                if_exists=True,
            )
