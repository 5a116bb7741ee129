"""attribution: impressions next to clicks (view-through attribution)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 17:00:00.000000

Additive.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "attribution_clicks",
        sa.Column("kind", sa.String(16), server_default="click", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("attribution_clicks", "kind")
