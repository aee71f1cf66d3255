"""What the server does on the broker when a device's credentials change, whichever
broker it runs with: Mosquitto through dynamic security, the embedded amqtt broker, or
a broker it does not manage. Built once by the app factory from the settings.

Order, for every change: the database row is written, the broker is told (dynsec),
then the database commits; after the commit the embedded broker drops the device's
live connections. A broker that refuses leaves the database as it was."""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from fleet_server.security.credentials import read_secret_file
from fleet_server.security.dynsec import DynsecClient
from fleet_server.settings import Settings

log = logging.getLogger(__name__)

# The server's own MQTT login on the embedded broker (its password is made at each start).
EMBEDDED_SERVER_USER = "campusfleet-server"


@dataclass(frozen=True)
class MqttLogin:
    username: str
    password: str

    def __repr__(self) -> str:   # never print the password
        return f"MqttLogin(username={self.username!r})"


class BrokerSecurity:
    """A broker whose security the server does not manage (Mosquitto without
    broker_admin_user): credentials are stored, nothing is enforced by the broker."""

    kind = "none"

    def set_device_secret(self, device_id: str, secret: str) -> None:
        """Before the commit: the broker accepts this secret (and only it) from now."""

    def ensure_device(self, device_id: str, secret: str) -> None:
        """Before the commit: the broker knows the device (its secret unchanged)."""

    def revoke_device(self, device_id: str) -> None:
        """Before the commit: the broker refuses the device from now."""

    def committed(self, device_id: str) -> None:
        """After the commit: drop live connections that logged in before the change."""

    def close(self) -> None:
        pass


class DynsecSecurity(BrokerSecurity):
    """Mosquitto with its dynamic-security plugin: device clients made, re-keyed and
    disabled live over $CONTROL/dynamic-security/v1 (the plugin kicks what it disables
    or re-keys)."""

    kind = "mosquitto-dynsec"

    def __init__(self, client: DynsecClient) -> None:
        self.client = client

    def set_device_secret(self, device_id: str, secret: str) -> None:
        self.client.create_device(device_id, secret)

    def ensure_device(self, device_id: str, secret: str) -> None:
        current = self.client.get_client(device_id)
        if current is None or current.get("disabled"):
            self.client.create_device(device_id, secret)

    def revoke_device(self, device_id: str) -> None:
        if self.client.get_client(device_id) is not None:
            self.client.disable(device_id)

    def close(self) -> None:
        self.client.close()


class EmbeddedSecurity(BrokerSecurity):
    """The embedded amqtt broker reads device_credentials itself at each CONNECT; what
    is left is to drop the connections made with the old credentials."""

    kind = "embedded"

    def __init__(self, broker) -> None:
        self.broker = broker

    def committed(self, device_id: str) -> None:
        n = self.broker.disconnect_user(device_id)
        if n:
            log.info("disconnected %d live connection(s) of %s after its credentials changed", n, device_id)


def server_login(settings: Settings) -> MqttLogin | None:
    """The server's own login to an external broker (ingest, commands), if configured."""
    if not settings.mqtt_user:
        return None
    if not settings.mqtt_password_file:
        raise ValueError("mqtt_user is set but mqtt_password_file is not: give the file holding its password")
    return MqttLogin(settings.mqtt_user, read_secret_file(settings.mqtt_password_file, "MQTT password"))


def embedded_server_login() -> MqttLogin:
    """A fresh random login for the server's own client on the embedded broker."""
    return MqttLogin(EMBEDDED_SERVER_USER, secrets.token_urlsafe(32))


def dynsec_security(settings: Settings, host: str, port: int, login: MqttLogin | None) -> BrokerSecurity:
    """Mosquitto: connect as the dynsec admin, make sure of the roles (and the server's
    own client when it has a login), or a BrokerSecurity that manages nothing."""
    if not settings.broker_admin_user:
        if settings.require_registration:
            log.warning("require_registration is on but the server does not manage this broker's clients "
                        "(no broker_admin_user): the broker alone decides who may connect. "
                        "See docs/security.md for Mosquitto's dynamic security.")
        return BrokerSecurity()
    if not settings.broker_admin_password_file:
        raise ValueError("broker_admin_user is set but broker_admin_password_file is not")
    password = read_secret_file(settings.broker_admin_password_file, "broker admin password")
    # Over TLS when the broker URL is mqtts:// (the admin password and every device
    # secret travel in these commands), verified with mqtt_ca_file like ingest.
    client = DynsecClient(host, port, username=settings.broker_admin_user, password=password,
                          tls_ca_file=settings.mqtt_tls_ca()).connect()
    try:
        client.ensure_roles()
        if login is not None:
            client.ensure_server_client(login.username, login.password)
    except Exception:
        client.close()
        raise
    log.info("managing device clients on %s:%s through dynamic security as %r%s", host, port,
             settings.broker_admin_user, " over TLS" if settings.mqtt_tls_ca() is not None else "")
    return DynsecSecurity(client)


def start_broker_security(settings: Settings, engine, stats) -> tuple[object | None, BrokerSecurity, MqttLogin | None]:
    """For the app factory: (the embedded broker, started, or None; the BrokerSecurity;
    the server's own MQTT login or None). Spoofed publishes the embedded broker drops
    are counted in `stats` as rejected/spoofed."""
    from fleet_server.broker import EmbeddedBroker
    from fleet_server.security.amqtt_auth import BrokerAccess
    from fleet_server.settings import EMBEDDED_SCHEME, parse_mqtt_url

    scheme, host, port = parse_mqtt_url(settings.mqtt)
    if scheme != EMBEDDED_SCHEME:
        login = server_login(settings)
        return None, dynsec_security(settings, host, port, login), login
    login = embedded_server_login()
    access = BrokerAccess(engine, require_registration=settings.require_registration,
                          server_user=login.username, server_secret=login.password,
                          on_spoofed=lambda device_id, topic: stats.count("rejected", "spoofed"))
    broker = EmbeddedBroker(host, port, access=access)
    broker.start()
    return broker, EmbeddedSecurity(broker), login
