"""Alerts: the alerts table (offline, co2_breach, sensor_failed; at most one open per
kind and subject) and the evaluator's state.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copy of fleet_server/db/alerts_schema.py at this revision.
OPEN_ONLY = "resolved_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(15)),
        sa.Column("room_id", sa.Integer),
        sa.Column("school_id", sa.Integer),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
        sa.Column("acked_at", sa.Float),
        sa.Column("acked_by", sa.String(64)),
        sa.Column("ack_note", sa.String(500)),
        sa.Column("detail", sa.Text, nullable=False),
        sa.CheckConstraint("kind IN ('offline', 'co2_breach', 'sensor_failed')", name="ck_alerts_kind"),
        sa.CheckConstraint("severity IN ('warning', 'critical')", name="ck_alerts_severity"),
        sa.UniqueConstraint("kind", "subject", "opened_at", name="uq_alerts_kind_subject_opened"),
    )
    op.create_index("uq_alerts_open_subject", "alerts", ["kind", "subject"], unique=True,
                    sqlite_where=sa.text(OPEN_ONLY), postgresql_where=sa.text(OPEN_ONLY))
    op.create_index("ix_alerts_opened", "alerts", ["opened_at"])
    op.create_index("ix_alerts_school_opened", "alerts", ["school_id", "opened_at"])
    op.create_index("ix_alerts_device", "alerts", ["device_id"])
    op.create_table(
        "alert_state",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alert_state")
    op.drop_index("ix_alerts_device", table_name="alerts")
    op.drop_index("ix_alerts_school_opened", table_name="alerts")
    op.drop_index("ix_alerts_opened", table_name="alerts")
    op.drop_index("uq_alerts_open_subject", table_name="alerts")
    op.drop_table("alerts")
