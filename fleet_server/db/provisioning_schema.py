"""Per-device MQTT credentials issued at registration (provisioning): only the scrypt
hash of each node's secret is kept. Issue 7 makes the broker check them."""
from sqlalchemy import Column, Float, ForeignKey, String, Table

from fleet_server.db.schema import metadata

device_credentials = Table(
    "device_credentials", metadata,
    Column("device_id", String(15), ForeignKey("devices.device_id", name="fk_credentials_device"),
           primary_key=True),
    # "scrypt$<log2 n>$<r>$<p>$<salt hex>$<key hex>" (RFC 7914 parameters in the string,
    # so they can be raised later without invalidating stored hashes).
    Column("password_hash", String(200), nullable=False),
    Column("issued_s", Float, nullable=False),       # Unix s of the latest (re)issue
    Column("hardware", String(32)),                  # board name the technician reported
    Column("firmware", String(32)),                  # node app version at registration
)
