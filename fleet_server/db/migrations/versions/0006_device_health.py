"""Device health: `status_history`, every status a node sent (heap, RSSI, boots, reset
causes and sensor states over time). Only `devices` held a status before, and only the
latest, so there is no history to carry over.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of fleet_server/db/schema.py `status_history` at this revision.
    op.create_table(
        "status_history",
        sa.Column("device_id", sa.String(15), nullable=False),
        sa.Column("received_s", sa.Float, nullable=False),
        sa.Column("online", sa.Boolean, nullable=False),
        sa.Column("status_ts", sa.BigInteger),
        sa.Column("fw", sa.String(32)),
        sa.Column("boot", sa.Integer),
        sa.Column("reset_cause", sa.String(16)),
        sa.Column("uptime_s", sa.BigInteger),
        sa.Column("heap_free", sa.Integer),
        sa.Column("rssi", sa.SmallInteger),
        sa.Column("outbox", sa.Integer),
        sa.Column("sensors", sa.Text),
        sa.PrimaryKeyConstraint("device_id", "received_s", name="pk_status_history"),
    )


def downgrade() -> None:
    op.drop_table("status_history")
