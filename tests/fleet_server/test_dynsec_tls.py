"""The dynamic-security admin connection over TLS (docs/security.md, "Mosquitto on
8883"): with an mqtts:// broker URL the server manages a real Mosquitto (dynamic
security, TLS-only listener, certificates from `campusfleet certs init`) over TLS,
verified with mqtt_ca_file, like ingest; a broker its CA did not sign is refused."""
from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet_server.security import certs
from fleet_server.security.dynsec import DynsecError
from fleet_server.security.manager import dynsec_security
from fleet_server.settings import Settings
from tests.utils.mosquitto_dynsec import MosquittoDynsec, dynsec_plugin_path
from tests.utils.registry_samples import ROOMS, SCHOOLS
from tests.utils.services import FleetServer

DEVICE = "cf-0000d5000001"


class MosquittoDynsecTls(MosquittoDynsec):
    """Mosquitto with dynamic security on a TLS-only listener (the docs' 8883 lines)."""

    def __init__(self, workdir: Path, ca: Path, cert: Path, key: Path) -> None:
        super().__init__(workdir)
        as_root = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\ntls_version tlsv1.2\n"
            "allow_anonymous false\n"
            f"plugin {dynsec_plugin_path()}\n"
            f"plugin_opt_config_file {self.dynsec_file}\n"
            "persistence false\n" + as_root +
            "max_inflight_messages 1000\nmax_queued_messages 100000\nlog_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
        self.conf.chmod(0o644)

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki-dynsec")
    ours = certs.init(root / "school", "No. 1 Middle School", ["localhost", "127.0.0.1", "::1"])
    other = certs.init(root / "other", "Another School", ["localhost", "127.0.0.1", "::1"])
    return {"ca": ours.ca_cert, "cert": ours.server_cert, "key": ours.server_key, "other_ca": other.ca_cert}


@pytest.fixture(scope="module")
def tls_dynsec_broker(pki, tmp_path_factory) -> Iterator[MosquittoDynsecTls]:
    broker = MosquittoDynsecTls(tmp_path_factory.mktemp("mosquitto-dynsec-tls"), pki["ca"], pki["cert"],
                                pki["key"]).start()
    yield broker
    broker.stop()


def _settings(broker: MosquittoDynsecTls, tmp_path: Path, ca: Path) -> Settings:
    pw = tmp_path / "ingest.pw"
    pw.write_text(uuid.uuid4().hex + "\n")
    pw.chmod(0o600)
    return Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=broker.url, mqtt_ca_file=str(ca),
                    ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}", mqtt_user=f"server-{uuid.uuid4().hex[:8]}",
                    mqtt_password_file=str(pw), broker_admin_user=broker.admin_user,
                    broker_admin_password_file=str(broker.admin_password_file))


def _device_connects(broker: MosquittoDynsecTls, ca: Path, password: str) -> bool:
    """A node's login over TLS: True on a successful CONNACK."""
    result: list[bool] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE)
    client.username_pw_set(DEVICE, password)
    client.tls_set(ca_certs=str(ca))

    def on_connect(c, userdata, flags, reason_code, properties):
        result.append(not reason_code.is_failure)
        done.set()
    client.on_connect = on_connect
    client.on_disconnect = lambda *a: done.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        done.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()
    return bool(result and result[0])


def test_the_server_manages_device_clients_over_tls(pki, tls_dynsec_broker, tmp_path):
    srv = FleetServer(_settings(tls_dynsec_broker, tmp_path, pki["ca"])).start()
    try:
        assert srv.app.state.broker_security.kind == "mosquitto-dynsec"
        assert srv.app.state.ingest.wait_subscribed(10)        # ingest's login was made over TLS too
        for kind, text in (("schools", SCHOOLS), ("rooms", ROOMS)):
            r = srv.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
            assert r.status_code == 200, r.text
        r = srv.http.post("/api/v1/provisioning/register",
                          json={"device_id": DEVICE, "school_code": "S1", "room_code": "A101"})
        assert r.status_code == 200, r.text
        secret = r.json()["mqtt"]["password"]
        assert _device_connects(tls_dynsec_broker, pki["ca"], secret)
        assert not _device_connects(tls_dynsec_broker, pki["ca"], secret + "x")
        r = srv.http.post(f"/api/v1/devices/{DEVICE}/credentials/revoke")
        assert r.status_code == 200 and r.json()["broker"] == "mosquitto-dynsec"
        assert not _device_connects(tls_dynsec_broker, pki["ca"], secret)
    finally:
        srv.stop()


def test_the_admin_connection_refuses_a_broker_its_ca_did_not_sign(pki, tls_dynsec_broker, tmp_path):
    settings = _settings(tls_dynsec_broker, tmp_path, pki["other_ca"])
    with pytest.raises(DynsecError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        dynsec_security(settings, tls_dynsec_broker.host, tls_dynsec_broker.port, None)
    # Plain MQTT to the TLS-only listener gets no admin connection either.
    plain = settings.model_copy(update={"mqtt": f"mqtt://{tls_dynsec_broker.host}:{tls_dynsec_broker.port}"})
    with pytest.raises(DynsecError):
        dynsec_security(plain, tls_dynsec_broker.host, tls_dynsec_broker.port, None)
