"""segmenter: attribute write times, device link times, erasures carried out

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 09:00:00.000000

Additive. ``profiles.attribute_writes`` keeps when each attribute was last written, so
that attributes fold in any order and merge at login latest-wins;
``device_aliases.linked_at`` keeps the event time of a device's link to its user, so
that an older event naming another user does not move the device;
``ix_device_aliases_user`` serves "the devices of this user" (erasure, admin's profile
view); ``segmenter_erasures`` makes a redelivered erasure a no-op. Existing rows get
no times: they count as older than any write.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "profiles",
        sa.Column(
            "attribute_writes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column(
        "device_aliases", sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_device_aliases_user", "device_aliases", ["app_id", "user_key"])
    op.create_table(
        "segmenter_erasures",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("erasure_id", sa.String(length=128), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "erasure_id", name=op.f("pk_segmenter_erasures")),
    )


def downgrade() -> None:
    op.drop_table("segmenter_erasures")
    op.drop_index("ix_device_aliases_user", table_name="device_aliases")
    op.drop_column("device_aliases", "linked_at")
    op.drop_column("profiles", "attribute_writes")
