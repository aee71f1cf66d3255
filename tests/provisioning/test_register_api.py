"""POST /api/v1/provisioning/register on a running server (SQLite and PostgreSQL): the
room by school + room code, the assignment, a random secret stored only as its scrypt
hash, kept when the node presents it again, replaced otherwise. The service behind the
thin route (fleet_server/services/registration.py) writes nothing its caller does not commit."""
from __future__ import annotations

from sqlalchemy import select

from fleet_server.api.routes.provisioning import SECRET_BYTES, check_secret, hash_secret
from fleet_server.db.provisioning_schema import device_credentials
from fleet_server.services import registration

DEVICE = "cf-240ac4123456"


def _register(fleet, **body):
    payload = {"device_id": DEVICE, "school_code": "S1", "room_code": "A101", "hardware": "s3-v1",
               "firmware": "0.2.0", **body}
    # fleet.http sends the operator's token, which holds devices:register.
    return fleet.http.post("/api/v1/provisioning/register", json=payload)


def test_register_assigns_the_room_and_issues_a_secret_stored_only_as_its_hash(fleet):
    r = _register(fleet)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["room"]["code"] == "A101" and body["school"]["code"] == "S1"
    mqtt = body["mqtt"]
    assert mqtt["username"] == DEVICE and (mqtt["host"], mqtt["port"]) == (fleet.settings.mqtt.split("//")[1].split(":")[0],
                                                                         int(fleet.settings.mqtt.rsplit(":", 1)[1]))
    assert len(mqtt["password"]) >= 22 and SECRET_BYTES * 8 >= 128
    cfg = body["config"]
    assert cfg["device_id"] == DEVICE and cfg["mqtt"]["user"] == DEVICE and cfg["mqtt"]["password"] == mqtt["password"]
    assert cfg["board"] == "s3-v1" and cfg["window_s"] == 60
    assert body["changed"] == {"assignment": True, "credentials": True}
    with fleet.app.state.engine.connect() as conn:
        row = conn.execute(select(device_credentials)).one()
    assert row.device_id == DEVICE and mqtt["password"] not in row.password_hash
    assert check_secret(mqtt["password"], row.password_hash) and not check_secret("guess", row.password_hash)
    assert fleet.device(DEVICE)["room"]["code"] == "A101"


def test_rerun_with_the_current_secret_changes_nothing_and_a_wrong_one_rotates_it(fleet):
    first = _register(fleet).json()
    again = _register(fleet, current_password=first["mqtt"]["password"]).json()
    assert again["changed"] == {"assignment": False, "credentials": False}
    assert again["mqtt"]["password"] == first["mqtt"]["password"]
    rotated = _register(fleet, current_password="not-the-secret").json()
    assert rotated["changed"]["credentials"] and rotated["mqtt"]["password"] != first["mqtt"]["password"]
    moved = _register(fleet, room_code="A102", current_password=rotated["mqtt"]["password"]).json()
    assert moved["changed"] == {"assignment": True, "credentials": False}
    assert fleet.device(DEVICE)["room"]["code"] == "A102"


def test_bad_registrations_are_refused_with_the_reason(fleet):
    assert _register(fleet, room_code="Z999").status_code == 404
    assert "no room 'Z999' in school S1" in _register(fleet, room_code="Z999").json()["detail"]
    assert _register(fleet, device_id="cf-XYZ").status_code == 422
    assert _register(fleet, school_id=1).status_code == 422          # both school_code and school_id
    school_id = fleet.get("/api/v1/schools")["items"][0]["id"]
    r = fleet.http.post("/api/v1/provisioning/register",
                        json={"device_id": DEVICE, "school_id": school_id, "room_code": "A101"})
    assert r.status_code == 200


def test_scrypt_hash_format_carries_its_parameters():
    h = hash_secret("s3cret", salt=bytes(16))
    scheme, log2_n, r, p, salt, key = h.split("$")
    assert (scheme, log2_n, r, p, salt) == ("scrypt", "14", "8", "1", "00" * 16) and len(key) == 64
    assert check_secret("s3cret", h) and not check_secret("s3cret", "md5$x")


def test_the_registration_service_writes_nothing_until_its_caller_commits(fleet):
    engine, mqtt_url = fleet.app.state.engine, fleet.settings.mqtt
    with engine.connect() as conn:
        result = registration.register_device(conn, device_id=DEVICE, school_code="S1", room_code="B201",
                                              hardware="s3-v1", mqtt_url=mqtt_url, api_host="127.0.0.1")
        assert result["changed"] == {"assignment": True, "credentials": True}
        assert result["config"]["board"] == "s3-v1" and result["room"]["code"] == "B201"
        conn.rollback()
    with engine.connect() as conn:
        assert conn.execute(select(device_credentials)).first() is None
    assert (fleet.device(DEVICE) or {}).get("room") is None
    with engine.connect() as conn:
        secret = registration.register_device(conn, device_id=DEVICE, school_code="S1", room_code="B201",
                                              mqtt_url=mqtt_url, api_host="127.0.0.1")["mqtt"]["password"]
        conn.commit()
        again = registration.register_device(conn, device_id=DEVICE, school_code="S1", room_code="B201",
                                             current_password=secret, mqtt_url=mqtt_url, api_host="127.0.0.1")
        conn.commit()
    assert again["changed"] == {"assignment": False, "credentials": False}
    assert fleet.device(DEVICE)["room"]["code"] == "B201"


def test_a_broker_on_loopback_is_announced_as_the_host_the_technician_reached():
    assert registration.broker_address("mqtt://127.0.0.1:1883", "192.0.2.10") == ("192.0.2.10", 1883)
    assert registration.broker_address("mqtt://0.0.0.0:1884", "fleet.school.lan") == ("fleet.school.lan", 1884)
    assert registration.broker_address("mqtt://127.0.0.1:1883", "localhost") == ("127.0.0.1", 1883)
    assert registration.broker_address("mqtt://broker.lan:1883", "192.0.2.10") == ("broker.lan", 1883)
