"""Firmware releases uploaded for OTA (docs/ota.md): one row per version; the files
themselves live on disk under the firmware folder (Settings.firmware_dir)."""
from sqlalchemy import BigInteger, Column, Float, Integer, String, Table, Text

from fleet_server.db.schema import metadata

firmware_releases = Table(
    "firmware_releases", metadata,
    Column("version", String(32), primary_key=True),
    Column("manifest_sha256", String(64), nullable=False),  # what the `ota` command carries
    Column("manifest_size", Integer, nullable=False),
    Column("signature", String(128), nullable=False),        # Ed25519 over the manifest, hex
    Column("public_key", String(64), nullable=False),        # the trusted key it verified under
    Column("boards", Text, nullable=False),                  # JSON list
    Column("min_micropython", String(16), nullable=False),
    Column("files", Integer, nullable=False),
    Column("total_bytes", BigInteger, nullable=False),
    Column("uploaded_s", Float, nullable=False),
)
