"""TLS end to end (docs/security.md, "TLS"): `campusfleet certs` makes a school CA and a
server certificate; a real Mosquitto serves MQTT over TLS with them; ingest connects
with mqtts:// and the CA; a virtual node (the real firmware on the MicroPython unix
port) verifies the broker with the CA from its config, and one with another school's
CA is refused and says why; `campusfleet serve --tls-cert/--tls-key` serves HTTPS. The
broker tests run with the broker on 127.0.0.1 and again on ::1 (the certificate names
both), and a broker on ::1 whose certificate does not name ::1 is refused."""
from __future__ import annotations

import ipaddress
import os
import ssl
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from fleet_server.cli import app as cli_app
from fleet_server.ingest.mqtt_adapter import MqttIngest
from fleet_server.ingest.stats import IngestStats
from fleet_server.db.engine import make_engine, migrate
from fleet_server.security import certs
from fleet_server.settings import Settings
from fleet_server.virtual_nodes import SHANGHAI
from tests.conftest import new_device_id
from tests.utils.mosquitto_tls import MosquittoOn, url_host
from tests.utils.services import FleetServer, free_port, needs_ipv6, wait_until

# mbedtls takes its TLS buffers from the unix port's GC heap (an ESP32 build takes
# them from the IDF heap instead), so a TLS node gets more heap than DEFAULT_HEAP.
TLS_NODE_HEAP = "256K"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """This school's CA + server certificate, and another school's CA."""
    root = tmp_path_factory.mktemp("pki")
    ours = certs.init(root / "school", "No. 1 Middle School", ["localhost", "127.0.0.1", "::1"])
    other = certs.init(root / "other", "Another School", ["localhost", "127.0.0.1", "::1"])
    return {"ca": ours.ca_cert, "cert": ours.server_cert, "key": ours.server_key, "other_ca": other.ca_cert}


@pytest.fixture(scope="module", params=[pytest.param("127.0.0.1", id="ipv4"),
                                        pytest.param("::1", id="ipv6", marks=needs_ipv6)])
def tls_broker(request, pki, tmp_path_factory):
    """Mosquitto on TLS only, on 127.0.0.1 and (a second run of each test) on ::1."""
    broker = MosquittoOn(tmp_path_factory.mktemp("mosquitto-tls"), host=request.param,
                         tls=(pki["ca"], pki["cert"], pki["key"])).start()
    yield broker
    broker.stop()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# --- the certificates -----------------------------------------------------------------

def test_certs_init_makes_a_ca_and_a_server_cert_with_dns_ipv4_and_ipv6_names(tmp_path):
    out = tmp_path / "certs"
    r = CliRunner().invoke(cli_app, ["certs", "init", "--dir", str(out), "--school", "No. 7 Primary School",
                                     "--hosts", "fleet.school.lan,10.1.2.3,[fd00::10],::1"])
    assert r.exit_code == 0, r.output
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    srv = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    # Keys are private to the owner; certificates are public.
    assert _mode(out / "ca.key") == 0o600 and _mode(out / "server.key") == 0o600
    assert _mode(out / "ca.pem") == 0o644
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert "No. 7 Primary School" in ca.subject.rfc4514_string()
    srv.verify_directly_issued_by(ca)
    assert srv.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ExtendedKeyUsageOID.SERVER_AUTH in srv.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fleet.school.lan"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3"),
                                                       ipaddress.ip_address("fd00::10"),
                                                       ipaddress.ip_address("::1")]
    # Validity: the CA 10 years, the server certificate 825 days (what clients accept).
    ca_days = (ca.not_valid_after_utc - ca.not_valid_before_utc).days
    srv_days = (srv.not_valid_after_utc - srv.not_valid_before_utc).days
    assert 3650 <= ca_days <= 3651 and 825 <= srv_days <= 826
    # Python's own TLS stack (OpenSSL) loads the pair and trusts the CA.
    ctx = ssl.create_default_context(cafile=str(out / "ca.pem"))
    ctx.load_cert_chain(out / "server.pem", out / "server.key")


def test_certs_init_by_default_names_localhost_and_both_loopback_addresses(tmp_path):
    """Without --hosts the server certificate is good for a broker or server on
    127.0.0.1 and on ::1 alike (both as iPAddress entries: clients match an address
    only against those)."""
    r = CliRunner().invoke(cli_app, ["certs", "init", "--dir", str(tmp_path / "c"), "--school", "S"])
    assert r.exit_code == 0, r.output
    srv = x509.load_pem_x509_certificate((tmp_path / "c" / "server.pem").read_bytes())
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("::1")]
    assert "localhost, 127.0.0.1, ::1" in r.output


def test_certs_init_refuses_to_replace_an_existing_ca(tmp_path):
    out = tmp_path / "certs"
    runner = CliRunner()
    assert runner.invoke(cli_app, ["certs", "init", "--dir", str(out), "--school", "A"]).exit_code == 0
    before = (out / "ca.pem").read_bytes()
    r = runner.invoke(cli_app, ["certs", "init", "--dir", str(out), "--school", "B"])
    assert r.exit_code == 1 and "exists" in r.output
    assert (out / "ca.pem").read_bytes() == before


def test_certs_server_issues_another_server_cert_from_the_ca(tmp_path):
    out = tmp_path / "certs"
    certs.init(out, "School", ["localhost"])
    r = CliRunner().invoke(cli_app, ["certs", "server", "--dir", str(out), "--host", "broker2.school.lan",
                                     "--host", "::1", "--name", "broker2"])
    assert r.exit_code == 0, r.output
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    srv = x509.load_pem_x509_certificate((out / "broker2.pem").read_bytes())
    srv.verify_directly_issued_by(ca)
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker2.school.lan"]
    assert _mode(out / "broker2.key") == 0o600


def test_certs_rejects_a_host_that_is_neither_a_name_nor_an_address(tmp_path):
    r = CliRunner().invoke(cli_app, ["certs", "init", "--dir", str(tmp_path / "c"), "--school", "S",
                                     "--hosts", "bad host!"])
    assert r.exit_code == 1 and "not a DNS name or IP address" in r.output
    assert not (tmp_path / "c" / "ca.key").exists()


def test_certs_server_without_a_ca_says_to_run_init(tmp_path):
    r = CliRunner().invoke(cli_app, ["certs", "server", "--dir", str(tmp_path), "--host", "x.lan"])
    assert r.exit_code == 1 and "certs init" in r.output


# --- MQTT over TLS --------------------------------------------------------------------

def test_ingest_over_tls_stores_what_a_tls_node_sends(pki, tls_broker, make_node, tmp_path):
    assert tls_broker.url.startswith(f"mqtts://{url_host(tls_broker.host)}:")
    settings = Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=tls_broker.url, mqtt_ca_file=str(pki["ca"]),
                        ingest_client_id="ingest-tls")
    srv = FleetServer(settings, host=tls_broker.host).start()   # fails unless ingest connects over TLS
    try:
        device_id = new_device_id()
        node = make_node(start=datetime.now(SHANGHAI) - timedelta(hours=1), speed=120, device_id=device_id,
                         heap=TLS_NODE_HEAP, files={"ca.pem": pki["ca"].read_bytes()},
                         mqtt={"host": tls_broker.host, "port": tls_broker.port, "tls": True, "ca": "ca.pem",
                               "user": device_id, "password": ""})
        dev = wait_until(lambda: (d := srv.device(device_id)) and d["windows_received"] >= 3 and d, 60,
                         what="windows from the TLS node")
        assert dev["online"] is True
        assert node.running(), (node.node_dir / "node.log").read_text()
        assert "cannot connect" not in (node.node_dir / "node.log").read_text()
        assert f"New connection from {tls_broker.host}" in tls_broker.log.read_text()
    finally:
        srv.stop()


def test_node_with_another_schools_ca_is_refused_and_says_why(pki, tls_broker, make_node, tmp_path):
    device_id = new_device_id()
    node = make_node(start=datetime.now(SHANGHAI) - timedelta(minutes=30), speed=60, device_id=device_id,
                     heap=TLS_NODE_HEAP, files={"ca.pem": pki["other_ca"].read_bytes()},
                     mqtt={"host": tls_broker.host, "port": tls_broker.port, "tls": True, "ca": "ca.pem",
                           "user": device_id, "password": ""})
    log = node.node_dir / "node.log"
    text = wait_until(lambda: log.exists() and "cannot connect" in (t := log.read_text()) and t, 30,
                      what="the node's log line about the refused broker")
    assert "TLS: server certificate refused" in text and "not correctly signed by the trusted CA" in text, text
    # It keeps running (measuring into its outbox) and keeps trying, logging the reason once.
    time.sleep(2)
    assert node.running(), log.read_text()
    assert log.read_text().count("cannot connect") == 1
    # The broker saw a handshake that the client aborted; no MQTT session.
    assert "failed" in tls_broker.log.read_text()


def test_node_with_a_missing_ca_file_reports_it(tls_broker, make_node):
    device_id = new_device_id()
    node = make_node(start=datetime.now(SHANGHAI) - timedelta(minutes=30), device_id=device_id,
                     heap=TLS_NODE_HEAP,
                     mqtt={"host": tls_broker.host, "port": tls_broker.port, "tls": True, "ca": "nope.pem",
                           "user": device_id, "password": ""})
    log = node.node_dir / "node.log"
    text = wait_until(lambda: log.exists() and "cannot connect" in (t := log.read_text()) and t, 30,
                      what="the node's log line about the CA file")
    assert "cannot read CA file nope.pem" in text
    assert node.running()


def test_ingest_refuses_a_broker_its_ca_did_not_sign(pki, tls_broker, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/fleet.db")
    migrate(engine)
    stats = IngestStats()
    ingest = MqttIngest(engine=engine, host=tls_broker.host, port=tls_broker.port, client_id="ingest-wrong-ca",
                        stats=stats, tls_ca_file=str(pki["other_ca"]))
    ingest.start()
    try:
        assert not ingest.wait_connected(3)
    finally:
        ingest.stop(2)
        engine.dispose()
    # And the right CA, but a name the certificate does not carry, is refused too (on ::1:
    # test_a_broker_on_ipv6_whose_certificate_lacks_ipv6_is_refused).
    if tls_broker.host != "127.0.0.1":
        return
    stats = IngestStats()
    ingest = MqttIngest(engine=make_engine(f"sqlite:///{tmp_path}/fleet.db"), host="127.0.0.2",
                        port=tls_broker.port, client_id="ingest-wrong-name", stats=stats, tls_ca_file=str(pki["ca"]))
    ingest.start()
    try:
        assert not ingest.wait_connected(3)
    finally:
        ingest.stop(2)


@needs_ipv6
def test_a_broker_on_ipv6_whose_certificate_lacks_ipv6_is_refused(tmp_path, make_node):
    """The address is checked, not only the CA: a certificate from the right CA naming
    localhost and 127.0.0.1 but not ::1 is refused by ingest and by a node reaching the
    broker at ::1 (the parametrized tests above pass with one that names ::1)."""
    issued = certs.init(tmp_path / "pki", "No. 1 Middle School", ["localhost", "127.0.0.1"])
    san = x509.load_pem_x509_certificate(issued.server_cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("::1") not in san.get_values_for_type(x509.IPAddress)
    (tmp_path / "broker").mkdir()
    broker = MosquittoOn(tmp_path / "broker", host="::1",
                         tls=(issued.ca_cert, issued.server_cert, issued.server_key)).start()
    engine = make_engine(f"sqlite:///{tmp_path}/fleet.db")
    migrate(engine)
    ingest = MqttIngest(engine=engine, host="::1", port=broker.port, client_id="ingest-no-v6-name",
                        stats=IngestStats(), tls_ca_file=str(issued.ca_cert))
    try:
        ingest.start()
        try:
            assert not ingest.wait_connected(3)
        finally:
            ingest.stop(2)
        device_id = new_device_id()
        node = make_node(start=datetime.now(SHANGHAI) - timedelta(minutes=30), speed=60, device_id=device_id,
                         heap=TLS_NODE_HEAP, files={"ca.pem": issued.ca_cert.read_bytes()},
                         mqtt={"host": "::1", "port": broker.port, "tls": True, "ca": "ca.pem",
                               "user": device_id, "password": ""})
        log = node.node_dir / "node.log"
        text = wait_until(lambda: log.exists() and "cannot connect" in (t := log.read_text()) and t, 30,
                          what="the node's log line about the refused broker")
        # Mbed TLS: "The certificate Common Name (CN) does not match with the expected CN"
        # (its wording for any name mismatch, subjectAltName included).
        assert "TLS: server certificate refused" in text and "does not match" in text, text
        assert node.running(), log.read_text()
    finally:
        broker.stop()
        engine.dispose()


# --- HTTPS ------------------------------------------------------------------------------

def test_serve_with_tls_cert_and_key_serves_https_only(pki, tmp_path):
    port, mqtt_port = free_port(), free_port()
    env = {**os.environ, "CAMPUSFLEET_REQUIRE_REGISTRATION": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet_server.cli", "serve", "--bind", f"127.0.0.1:{port}",
         "--mqtt", f"embedded://127.0.0.1:{mqtt_port}", "--db", f"sqlite:///{tmp_path}/fleet.db",
         "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def health():
            try:
                return httpx.get(f"https://127.0.0.1:{port}/api/v1/health", verify=ssl.create_default_context(cafile=pki["ca"]), timeout=2)
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                return None
        r = wait_until(health, 30, 0.2, "the HTTPS server")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert r.headers["strict-transport-security"].startswith("max-age=")
        # A client that does not trust the school's CA refuses the server ...
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/api/v1/health", verify=ssl.create_default_context(cafile=pki["other_ca"]), timeout=2)
        # ... and plain HTTP gets no answer on the HTTPS port.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
    finally:
        proc.terminate()
        proc.wait(15)


def test_serve_refuses_a_cert_without_its_key(pki):
    r = CliRunner().invoke(cli_app, ["serve", "--tls-cert", str(pki["cert"])])
    assert r.exit_code != 0 and "go together" in r.output
