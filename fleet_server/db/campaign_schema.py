"""OTA campaigns (docs/ota.md "Campaigns"): who gets which release when, each device's
state in it, every state transition, and the progress acks nodes send for an `ota`
command (written by ingest, read by the campaign engine)."""
from sqlalchemy import (Boolean, Column, Float, Index, Integer, PrimaryKeyConstraint, String,
                        Table, Text)

from fleet_server.db.schema import metadata

ota_campaigns = Table(
    "ota_campaigns", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(80), nullable=False),
    Column("version", String(32), nullable=False),      # firmware_releases.version
    Column("target", Text, nullable=False),             # JSON: scope, region / school_id / devices, percent
    Column("waves", Text, nullable=False),              # JSON: cumulative percentages, e.g. [1, 10, 50, 100]
    Column("success_pct", Float, nullable=False),       # a wave must reach this share confirmed
    Column("max_failure_pct", Float, nullable=False),   # halt once failures exceed this share of those sent
    Column("wave_timeout_s", Integer, nullable=False),  # a device still in flight this long after its command fails
    Column("command_ttl_s", Integer, nullable=False),   # the `ota` command's exp (held by the broker while a node is away)
    Column("base_url", String(255), nullable=False),    # where nodes download the release from
    Column("state", String(16), nullable=False),        # running | paused | halted | aborted | completed
    Column("reason", Text),                             # why it halted, was aborted or completed
    Column("wave", Integer, nullable=False),            # the wave now being sent (0-based)
    Column("devices", Integer, nullable=False),         # devices in the campaign
    Column("created_s", Float, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("updated_s", Float, nullable=False),
    Column("finished_s", Float),
)

ota_campaign_devices = Table(
    "ota_campaign_devices", metadata,
    Column("campaign_id", Integer, nullable=False),
    Column("device_id", String(15), nullable=False),
    Column("wave", Integer, nullable=False),
    Column("position", Integer, nullable=False),        # the rollout order (a hash of campaign and device)
    # pending | sent | downloading | verified | installed | confirmed | rolled_back | failed
    # | skipped (already on the version) | cancelled (the campaign ended before it was sent)
    Column("state", String(16), nullable=False),
    Column("reason", String(64)),
    Column("cmd_id", String(64)),
    Column("pct", Integer),                             # download progress the node reported
    Column("fw_before", String(32)),
    Column("sent_s", Float),
    Column("updated_s", Float, nullable=False),
    PrimaryKeyConstraint("campaign_id", "device_id", name="pk_ota_campaign_devices"),
    Index("ix_ota_campaign_devices_state", "campaign_id", "state"),
    Index("ix_ota_campaign_devices_device", "device_id"),
)

# Append-only: every state a device (device_id set) or the campaign (device_id NULL) entered.
ota_campaign_events = Table(
    "ota_campaign_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, nullable=False),
    Column("device_id", String(15)),
    Column("state", String(16), nullable=False),
    Column("reason", Text),
    Column("at_s", Float, nullable=False),
    Index("ix_ota_campaign_events_campaign", "campaign_id", "id"),
)

# One row per (command, stage) a node acked with an "ota" key (PROTOCOL.md, docs/ota.md):
# accepted, download (pct), verified, installed, confirmed, rolled_back, refused.
command_progress = Table(
    "command_progress", metadata,
    Column("device_id", String(15), nullable=False),
    Column("cmd_id", String(64), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("err", String(64)),
    Column("pct", Integer),
    Column("fw", String(32)),
    Column("acked_s", Float, nullable=False),
    PrimaryKeyConstraint("device_id", "cmd_id", "stage", name="pk_command_progress"),
)
