"""attribution: erasures carried out, device links by user

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 09:00:00.000000

Additive. ``attribution_erasures`` makes a redelivered erasure a no-op;
``ix_attribution_device_links_user`` serves "the devices linked to this user" (erasure).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attribution_erasures",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("erasure_id", sa.String(length=128), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "erasure_id", name=op.f("pk_attribution_erasures")),
    )
    op.create_index(
        "ix_attribution_device_links_user", "attribution_device_links", ["app_id", "user_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_attribution_device_links_user", table_name="attribution_device_links")
    op.drop_table("attribution_erasures")
