"""attribution: the hardware each install ran on

Revision ID: 0021_ident
Revises: 0020_prov
Create Date: 2026-12-08 12:00:00.000000

Additive. ``attribution_installs.hardware`` (``logic.hardware``: platform and model)
tells a user's second device from a reinstall when the install has no advertising id.
Rows written before it have none: their users' later installs are judged as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_ident"
down_revision: str | None = "0020_prov"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attribution_installs", sa.Column("hardware", sa.String(length=160)))


def downgrade() -> None:
    op.drop_column("attribution_installs", "hardware")
