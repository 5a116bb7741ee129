"""attribution: postback attempts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 16:50:00.000000

Additive.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attribution_postbacks",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("attribution_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("url", sa.String(4096), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(1024), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attribution_postbacks")),
    )
    op.create_index(
        "ix_attribution_postbacks_attribution",
        "attribution_postbacks",
        ["app_id", "attribution_id", "status"],
    )


def downgrade() -> None:
    op.drop_index("ix_attribution_postbacks_attribution", table_name="attribution_postbacks")
    op.drop_table("attribution_postbacks")
