"""attribution: verified users, for trackers that count on verification

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 16:40:00.000000

Additive.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attribution_verifications",
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "user_id", name=op.f("pk_attribution_verifications")),
    )
    op.create_index(
        "ix_attribution_verifications_device",
        "attribution_verifications",
        ["app_id", "device_id"],
    )
    op.create_index("ix_attribution_installs_status", "attribution_installs", ["app_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_attribution_installs_status", table_name="attribution_installs")
    op.drop_index("ix_attribution_verifications_device", table_name="attribution_verifications")
    op.drop_table("attribution_verifications")
