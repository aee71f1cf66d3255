"""Alert tables: one row per alert (a device offline in school hours, a room's CO2
breach episode, a failed sensor) from the time it opens until it resolves, plus acks.

At most one alert per (kind, subject) is open: a partial unique index over the rows
with `resolved_at IS NULL` makes a second open row a conflict, whichever evaluator
(several API servers on one PostgreSQL) tries to write it. Times are Unix seconds."""
from sqlalchemy import (
    CheckConstraint, Column, Float, Index, Integer, String, Table, Text, UniqueConstraint, text,
)

from fleet_server.db.schema import metadata

ALERT_KINDS = ("offline", "co2_breach", "sensor_failed")
SEVERITIES = ("warning", "critical")

alerts = Table(
    "alerts", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("severity", String(8), nullable=False),
    # What the alert is about, unique per kind among open alerts: the device id
    # (offline), "room:<id>" (co2_breach), "<device id>/<sensor>" (sensor_failed).
    Column("subject", String(64), nullable=False),
    Column("device_id", String(15)),
    Column("room_id", Integer),
    Column("school_id", Integer),
    Column("opened_at", Float, nullable=False),      # when the condition began to hold
    Column("last_seen_at", Float, nullable=False),   # the latest time it was seen to hold
    Column("resolved_at", Float),                    # NULL = open
    Column("acked_at", Float),
    Column("acked_by", String(64)),
    Column("ack_note", String(500)),
    Column("detail", Text, nullable=False, default="{}"),   # JSON object, kind-specific
    CheckConstraint("kind IN ('offline', 'co2_breach', 'sensor_failed')", name="ck_alerts_kind"),
    CheckConstraint("severity IN ('warning', 'critical')", name="ck_alerts_severity"),
    # A CO2 episode is known by its room and start: re-reading its windows finds this row.
    UniqueConstraint("kind", "subject", "opened_at", name="uq_alerts_kind_subject_opened"),
    Index("uq_alerts_open_subject", "kind", "subject", unique=True,
          sqlite_where=text("resolved_at IS NULL"), postgresql_where=text("resolved_at IS NULL")),
    Index("ix_alerts_opened", "opened_at"),
    Index("ix_alerts_school_opened", "school_id", "opened_at"),
    Index("ix_alerts_device", "device_id"),
)

# Small key/value state of the evaluator (the time of its last run).
alert_state = Table(
    "alert_state", metadata,
    Column("key", String(32), primary_key=True),
    Column("value", Text, nullable=False),
)
