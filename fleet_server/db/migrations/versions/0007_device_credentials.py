"""Provisioning: `device_credentials`, the scrypt hash of each node's MQTT secret issued
at registration (POST /api/v1/provisioning/register).

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of fleet_server/db/provisioning_schema.py at this revision.
    op.create_table(
        "device_credentials",
        sa.Column("device_id", sa.String(15), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("issued_s", sa.Float, nullable=False),
        sa.Column("hardware", sa.String(32)),
        sa.Column("firmware", sa.String(32)),
        sa.PrimaryKeyConstraint("device_id"),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"], name="fk_credentials_device"),
    )


def downgrade() -> None:
    op.drop_table("device_credentials")
