"""A small client for Mosquitto's dynamic-security plugin: JSON commands published to
`$CONTROL/dynamic-security/v1`, answers read from `.../response` and matched by
correlation data. The server uses it to create, re-key, disable and delete device
clients while the broker runs (docs/security.md).

Secrets (the admin password, device passwords) go only into the command payloads,
never into log lines or exception messages."""
from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.security import acl

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
# Error texts of the plugin (mosquitto 2.0, plugins/dynamic-security) the helpers below
# treat as "already so".
CLIENT_EXISTS = "Client already exists"
ROLE_EXISTS = "Role already exists"
CLIENT_NOT_FOUND = "Client not found"
ROLE_NOT_FOUND = "Role not found"


class DynsecError(RuntimeError):
    """The plugin refused a command (its error text), or could not be reached."""

    def __init__(self, message: str, *, command: str | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.command = command
        self.error = error


class DynsecTimeout(DynsecError):
    pass


class DynsecClient:
    """One MQTT connection as the broker's dynsec admin. Thread-safe: calls from several
    threads are matched to their answers by correlation data."""

    def __init__(self, host: str, port: int, *, username: str, password: str,
                 client_id: str | None = None, timeout_s: float = 5.0, tls_ca_file: str | None = None) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[threading.Event, list[dict]]] = {}
        self._ready = threading.Event()
        self._refused: str | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"campusfleet-dynsec-{uuid.uuid4().hex[:8]}",
                                   protocol=mqtt.MQTTv5)
        self._client.username_pw_set(username, password)
        if tls_ca_file is not None:   # mqtts://: verify the broker's chain and name ('' = system trust)
            self._client.tls_set(ca_certs=tls_ca_file or None)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)

    # --- connection ----------------------------------------------------------------
    def connect(self) -> DynsecClient:
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise DynsecError(f"cannot reach the MQTT broker at {self.host}:{self.port} for dynamic "
                              f"security: {e}") from None
        self._client.loop_start()
        if not self._ready.wait(self.timeout_s):
            self.close()
            reason = self._refused or "no answer"
            raise DynsecError(f"dynamic-security admin {self.username!r} could not connect to "
                              f"{self.host}:{self.port} and subscribe to {RESPONSE_TOPIC}: {reason} "
                              "(check broker_admin_user / broker_admin_password_file and the admin role)")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = f"connection refused ({reason_code})"
            log.error("broker refused the dynamic-security admin %r: %s", self.username, reason_code)
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self._refused = f"subscription to {RESPONSE_TOPIC} refused ({reason_codes[0]})"
            log.error("broker refused the dynamic-security response subscription: %s", reason_codes[0])
            return
        self._ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._ready.clear()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable dynamic-security response ignored")
            return
        with self._lock:
            for resp in responses:
                corr = resp.get("correlationData") if isinstance(resp, dict) else None
                waiting = self._pending.get(corr) if isinstance(corr, str) else None
                if waiting is not None:
                    waiting[1].append(resp)
                    waiting[0].set()

    # --- commands ----------------------------------------------------------------------
    def call(self, command: dict[str, Any], *, ok_errors: tuple[str, ...] = ()) -> dict:
        """Send one command; its response (without correlationData). Raises DynsecError
        with the plugin's error text, unless it is one of `ok_errors`."""
        name = command.get("command", "?")
        if not self._ready.wait(self.timeout_s):
            raise DynsecTimeout(f"dynamic security {name}: not connected to the broker", command=name)
        corr = uuid.uuid4().hex
        done = threading.Event()
        box: list[dict] = []
        with self._lock:
            self._pending[corr] = (done, box)
        try:
            info = self._client.publish(CONTROL_TOPIC, json.dumps({"commands": [{**command, "correlationData": corr}]}),
                                        qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise DynsecError(f"dynamic security {name}: publish failed ({mqtt.error_string(info.rc)})",
                                  command=name)
            if not done.wait(self.timeout_s):
                raise DynsecTimeout(
                    f"dynamic security {name}: no answer within {self.timeout_s:g} s (is the plugin "
                    f"mosquitto_dynamic_security.so loaded, and may {self.username!r} publish to {CONTROL_TOPIC}?)",
                    command=name)
        finally:
            with self._lock:
                self._pending.pop(corr, None)
        resp = {k: v for k, v in box[0].items() if k != "correlationData"}
        error = resp.get("error")
        if error and error not in ok_errors:
            target = command.get("username") or command.get("rolename") or ""
            raise DynsecError(f"dynamic security {name} {target}: {error}".replace("  ", " "),
                              command=name, error=error)
        return resp

    # --- roles -------------------------------------------------------------------------
    def ensure_role(self, rolename: str, acls: list[dict]) -> None:
        """Create the role, or bring an existing one's ACLs to `acls`."""
        resp = self.call({"command": "createRole", "rolename": rolename, "acls": acls}, ok_errors=(ROLE_EXISTS,))
        if resp.get("error") == ROLE_EXISTS:
            self.call({"command": "modifyRole", "rolename": rolename, "acls": acls})

    def ensure_roles(self) -> None:
        """Deny by default, and the server's own role (see acl.py). Device roles are made
        per device (Mosquitto 2.0 has no %c / %u in dynsec ACLs)."""
        self.call({"command": "setDefaultACLAccess", "acls": acl.DYNSEC_DEFAULT_ACCESS})
        self.ensure_role(acl.SERVER_ROLE, acl.dynsec_server_acls())

    # --- clients -----------------------------------------------------------------------
    def ensure_server_client(self, username: str, password: str) -> None:
        """The server's own client (ingest, commands) with the server role. Created with
        this password if missing; an existing one keeps its password (re-keying it here
        would kick every ingest worker that shares it at each server start)."""
        resp = self.call({"command": "createClient", "username": username, "password": password,
                          "roles": [{"rolename": acl.SERVER_ROLE, "priority": 0}]}, ok_errors=(CLIENT_EXISTS,))
        if resp.get("error") == CLIENT_EXISTS:
            current = self.get_client(username) or {}
            if acl.SERVER_ROLE not in {r.get("rolename") for r in current.get("roles", [])}:
                self.call({"command": "addClientRole", "username": username, "rolename": acl.SERVER_ROLE,
                           "priority": 0})

    def create_device(self, device_id: str, password: str) -> None:
        """A device client: username = client id = device id, its own role, this password.
        An existing one is re-keyed, enabled and given its role again."""
        if not acl.is_device_id(device_id):
            raise ValueError(f"not a device id: {device_id!r}")
        self.ensure_role(acl.device_role(device_id), acl.dynsec_device_acls(device_id))
        self._ensure_client(device_id, password, rolename=acl.device_role(device_id), clientid=device_id)

    def _ensure_client(self, username: str, password: str, *, rolename: str, clientid: str | None) -> None:
        cmd = {"command": "createClient", "username": username, "password": password,
               "roles": [{"rolename": rolename, "priority": 0}]}
        if clientid:
            # The broker then accepts this username only with this client id, so one
            # device cannot take over another's session by using its client id.
            cmd["clientid"] = clientid
        resp = self.call(cmd, ok_errors=(CLIENT_EXISTS,))
        if resp.get("error") == CLIENT_EXISTS:
            self.call({"command": "modifyClient", "username": username, "password": password,
                       "clientid": clientid or "", "roles": [{"rolename": rolename, "priority": 0}]})
            self.call({"command": "enableClient", "username": username})

    def set_password(self, username: str, password: str) -> None:
        """Re-key: the old password stops working; a client connected with it is kicked."""
        self.call({"command": "setClientPassword", "username": username, "password": password})

    def disable(self, username: str) -> None:
        """Revoke: no more logins, and connected clients of this username are kicked."""
        self.call({"command": "disableClient", "username": username})

    def enable(self, username: str) -> None:
        self.call({"command": "enableClient", "username": username})

    def delete_device(self, device_id: str) -> None:
        self.call({"command": "deleteClient", "username": device_id}, ok_errors=(CLIENT_NOT_FOUND,))
        self.call({"command": "deleteRole", "rolename": acl.device_role(device_id)}, ok_errors=(ROLE_NOT_FOUND,))

    def get_client(self, username: str) -> dict | None:
        resp = self.call({"command": "getClient", "username": username}, ok_errors=(CLIENT_NOT_FOUND,))
        if resp.get("error") == CLIENT_NOT_FOUND:
            return None
        return resp.get("data", {}).get("client")

    def list_clients(self) -> list[str]:
        resp = self.call({"command": "listClients", "verbose": False, "count": -1, "offset": 0})
        return list(resp.get("data", {}).get("clients", []))
