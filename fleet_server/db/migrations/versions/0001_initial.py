"""Initial schema: devices, windows, events, commands.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(15), primary_key=True),
        sa.Column("first_seen_s", sa.Float, nullable=False),
        sa.Column("last_seen_s", sa.Float),
        sa.Column("online", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("online_since_s", sa.Float),
        sa.Column("fw", sa.String(32)),
        sa.Column("hw", sa.String(32)),
        sa.Column("boot", sa.Integer),
        sa.Column("reset_cause", sa.String(16)),
        sa.Column("uptime_s", sa.BigInteger),
        sa.Column("heap_free", sa.Integer),
        sa.Column("rssi", sa.SmallInteger),
        sa.Column("ip", sa.String(64)),
        sa.Column("clock", sa.String(8)),
        sa.Column("outbox", sa.Integer),
        sa.Column("sensors", sa.Text),
        sa.Column("status_ts", sa.BigInteger),
        sa.Column("win_s", sa.Integer),
        sa.Column("windows_received", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_window", sa.Text),
        sa.Column("last_window_ts", sa.BigInteger),
        sa.Column("present", sa.Boolean),
        sa.Column("present_ts", sa.BigInteger),
        sa.Column("room_id", sa.Integer),
    )
    op.create_table(
        "windows",
        sa.Column("device_id", sa.String(15), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("win", sa.SmallInteger, nullable=False),
        sa.Column("occupied_s", sa.SmallInteger, nullable=False),
        sa.Column("present", sa.Boolean, nullable=False),
        sa.Column("pir", sa.Integer),
        sa.Column("radar_s", sa.SmallInteger),
        sa.Column("co2_ppm", sa.SmallInteger),
        sa.Column("temp_c", sa.Float),
        sa.Column("rh_pct", sa.Float),
        sa.Column("lux", sa.Float),
        sa.Column("noise_dba", sa.Float),
        sa.Column("received_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq", name="pk_windows"),
    )
    op.create_index("ix_windows_device_ts", "windows", ["device_id", "ts"])
    op.create_table(
        "events",
        sa.Column("device_id", sa.String(15), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("present", sa.Boolean, nullable=False),
        sa.Column("received_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq", name="pk_events"),
    )
    op.create_table(
        "commands",
        sa.Column("cmd_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(15), nullable=False),
        sa.Column("op", sa.String(16)),
        sa.Column("args", sa.Text),
        sa.Column("created_s", sa.Float),
        sa.Column("exp", sa.BigInteger),
        sa.Column("acked_s", sa.Float),
        sa.Column("ok", sa.Boolean),
        sa.Column("err", sa.String(64)),
        sa.PrimaryKeyConstraint("device_id", "cmd_id", name="pk_commands"),
    )


def downgrade() -> None:
    op.drop_table("commands")
    op.drop_table("events")
    op.drop_index("ix_windows_device_ts", table_name="windows")
    op.drop_table("windows")
    op.drop_table("devices")
