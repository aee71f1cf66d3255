"""OTA campaigns: `ota_campaigns`, `ota_campaign_devices`, `ota_campaign_events` and the
progress acks of `ota` commands, `command_progress` (issue 8).

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of fleet_server/db/campaign_schema.py at this revision.
    op.create_table(
        "ota_campaigns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("waves", sa.Text, nullable=False),
        sa.Column("success_pct", sa.Float, nullable=False),
        sa.Column("max_failure_pct", sa.Float, nullable=False),
        sa.Column("wave_timeout_s", sa.Integer, nullable=False),
        sa.Column("command_ttl_s", sa.Integer, nullable=False),
        sa.Column("base_url", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("devices", sa.Integer, nullable=False),
        sa.Column("created_s", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("updated_s", sa.Float, nullable=False),
        sa.Column("finished_s", sa.Float),
    )
    op.create_table(
        "ota_campaign_devices",
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("device_id", sa.String(15), nullable=False),
        sa.Column("wave", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("cmd_id", sa.String(64)),
        sa.Column("pct", sa.Integer),
        sa.Column("fw_before", sa.String(32)),
        sa.Column("sent_s", sa.Float),
        sa.Column("updated_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "device_id", name="pk_ota_campaign_devices"),
    )
    op.create_index("ix_ota_campaign_devices_state", "ota_campaign_devices", ["campaign_id", "state"])
    op.create_index("ix_ota_campaign_devices_device", "ota_campaign_devices", ["device_id"])
    op.create_table(
        "ota_campaign_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("device_id", sa.String(15)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("at_s", sa.Float, nullable=False),
    )
    op.create_index("ix_ota_campaign_events_campaign", "ota_campaign_events", ["campaign_id", "id"])
    op.create_table(
        "command_progress",
        sa.Column("device_id", sa.String(15), nullable=False),
        sa.Column("cmd_id", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("err", sa.String(64)),
        sa.Column("pct", sa.Integer),
        sa.Column("fw", sa.String(32)),
        sa.Column("acked_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "cmd_id", "stage", name="pk_command_progress"),
    )


def downgrade() -> None:
    op.drop_table("command_progress")
    op.drop_index("ix_ota_campaign_events_campaign", table_name="ota_campaign_events")
    op.drop_table("ota_campaign_events")
    op.drop_index("ix_ota_campaign_devices_device", table_name="ota_campaign_devices")
    op.drop_index("ix_ota_campaign_devices_state", table_name="ota_campaign_devices")
    op.drop_table("ota_campaign_devices")
    op.drop_table("ota_campaigns")
