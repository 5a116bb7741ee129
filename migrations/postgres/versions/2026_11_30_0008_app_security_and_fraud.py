"""apps: SDK signing and fraud settings; ingest replay memory; fraud facts in the ledger

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 14:00:00.000000

Additive.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "apps",
        sa.Column("require_signature", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "apps",
        sa.Column(
            "fraud",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_table(
        "app_sdk_secrets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("app_id", sa.String(64), sa.ForeignKey("apps.id"), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_app_sdk_secrets_app_id", "app_sdk_secrets", ["app_id"])
    op.create_table(
        "ingest_signatures",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("signature", sa.String(64), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ingest_signatures_seen_at", "ingest_signatures", ["app_id", "seen_at"])
    op.add_column("attribution_installs", sa.Column("ip", sa.String(64), nullable=True))
    op.add_column(
        "attribution_installs",
        sa.Column("install_begin_ts", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "attribution_installs",
        sa.Column(
            "fraud_reasons",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_attribution_installs_ip", "attribution_installs", ["app_id", "ip", "install_ts"]
    )
    op.create_index(
        "ix_attribution_clicks_ip", "attribution_clicks", ["app_id", "tracker_token", "ip", "ts"]
    )


def downgrade() -> None:
    op.drop_index("ix_attribution_clicks_ip", table_name="attribution_clicks")
    op.drop_index("ix_attribution_installs_ip", table_name="attribution_installs")
    op.drop_column("attribution_installs", "fraud_reasons")
    op.drop_column("attribution_installs", "install_begin_ts")
    op.drop_column("attribution_installs", "ip")
    op.drop_index("ix_ingest_signatures_seen_at", table_name="ingest_signatures")
    op.drop_table("ingest_signatures")
    op.drop_index("ix_app_sdk_secrets_app_id", table_name="app_sdk_secrets")
    op.drop_table("app_sdk_secrets")
    op.drop_column("apps", "fraud")
    op.drop_column("apps", "require_signature")
