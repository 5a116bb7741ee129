"""attribution: advertising-id and fingerprint matching, install history

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 16:25:00.000000

Additive: new nullable columns and indexes, safe while services run.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attribution_clicks", sa.Column("user_agent", sa.String(2048), nullable=True))
    op.add_column("attribution_clicks", sa.Column("fingerprint", sa.String(600), nullable=True))
    op.create_index("ix_attribution_clicks_adid", "attribution_clicks", ["app_id", "adid", "ts"])
    op.create_index(
        "ix_attribution_clicks_fingerprint", "attribution_clicks", ["app_id", "fingerprint", "ts"]
    )
    op.add_column("attribution_installs", sa.Column("adid", sa.String(128), nullable=True))
    op.create_index("ix_attribution_installs_adid", "attribution_installs", ["app_id", "adid"])
    op.create_index("ix_attribution_installs_user", "attribution_installs", ["app_id", "user_key"])


def downgrade() -> None:
    op.drop_index("ix_attribution_installs_user", table_name="attribution_installs")
    op.drop_index("ix_attribution_installs_adid", table_name="attribution_installs")
    op.drop_column("attribution_installs", "adid")
    op.drop_index("ix_attribution_clicks_fingerprint", table_name="attribution_clicks")
    op.drop_index("ix_attribution_clicks_adid", table_name="attribution_clicks")
    op.drop_column("attribution_clicks", "fingerprint")
    op.drop_column("attribution_clicks", "user_agent")
