"""dispatcher provider credentials: per-app FCM/APNs/web push/SMS/SMTP credentials

Revision ID: 0020_prov
Revises: 0016_timed
Create Date: 2026-12-09 09:00:00.000000

Additive. Written and read by the dispatcher; the secret column is envelope-encrypted.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020_prov"
down_revision: str | None = "0016_timed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatcher_provider_credentials",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("secret_rotated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["apps.id"], name=op.f("fk_dispatcher_provider_credentials_app_id_apps")
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "provider", name=op.f("pk_dispatcher_provider_credentials")
        ),
    )


def downgrade() -> None:
    op.drop_table("dispatcher_provider_credentials")
