"""Host-side config validation: every problem named with its unit, before a board is touched."""
from __future__ import annotations

import pytest

from provisioning.errors import ProvisionError
from provisioning.nodeconfig import ConfigError, device_id_from_mac, problems, validate
from provisioning.register import build_config, parse_room_qr

GOOD = {"v": 1, "device_id": "cf-a1b2c3d4e5f6", "board": "s3-v1",
        "wifi": {"ssid": "school-iot", "password": "correct horse"},
        "mqtt": {"host": "fleet.school.lan", "port": 1883, "tls": False, "user": "cf-a1b2c3d4e5f6",
                 "password": "x" * 32},
        "window_s": 60, "status_s": 300, "ntp": ["ntp.aliyun.com"]}


def test_a_good_config_passes():
    assert validate(GOOD) is GOOD


@pytest.mark.parametrize("change,expected", [
    ({"window_s": 5}, "window_s: an integer 10..900 s, not 5"),
    ({"status_s": True}, "status_s: an integer 30..86400 s"),
    ({"wifi": {"ssid": "x" * 33, "password": "correct horse"}}, "wifi.ssid: 1..32 bytes"),
    ({"wifi": {"ssid": "iot", "password": "short"}}, "wifi.password: empty (open network) or 8..63"),
    ({"mqtt": {**GOOD["mqtt"], "port": 70000}}, "mqtt.port: an integer TCP port 1..65535"),
    ({"mqtt": {**GOOD["mqtt"], "host": "bad host!"}}, "mqtt.host: 'bad host!' is not a host name"),
    ({"mqtt": {**GOOD["mqtt"], "user": "cf-000000000000"}}, "mqtt.user: must equal device_id"),
    ({"mqtt": {**GOOD["mqtt"], "tls": True}}, "mqtt.ca: the CA file name"),
    ({"device_id": "cf-A1B2C3D4E5F6", "mqtt": {**GOOD["mqtt"], "user": "cf-A1B2C3D4E5F6"}}, "device_id: 'cf-A1B2C3D4E5F6' does not match"),
    ({"board": "esp8266"}, "board: 'esp8266' is not one of"),
    ({"presence": {"hold_s": 5}}, "presence.hold_s: an integer 10..3600 s"),
    ({"ntp": []}, "ntp: a list of 1..3 NTP server host names"),
])
def test_each_bad_value_is_named_with_its_range(change, expected):
    found = problems({**GOOD, **change})
    assert len(found) == 1 and found[0].startswith(expected), found


def test_all_problems_are_reported_at_once_on_one_line():
    with pytest.raises(ConfigError) as e:
        validate({**GOOD, "window_s": 1, "status_s": 1})
    assert len(e.value.problems) == 2 and "\n" not in str(e.value)


def test_device_id_comes_from_the_mac_in_any_notation():
    assert device_id_from_mac("A1:B2:C3:D4:E5:F6") == "cf-a1b2c3d4e5f6"
    assert device_id_from_mac("a1-b2-c3-d4-e5-f6") == "cf-a1b2c3d4e5f6"
    with pytest.raises(ProvisionError):
        device_id_from_mac("a1:b2")


def test_room_qr_forms():
    assert parse_room_qr("campusfleet://room?school=S1&room=A101") == ("S1", "A101")
    assert parse_room_qr(" S1/A101\n") == ("S1", "A101")
    with pytest.raises(ProvisionError, match="not a room QR code"):
        parse_room_qr("https://example.com/")


def test_new_config_keeps_the_nodes_own_tweaks_and_takes_the_servers_connection():
    current = {**GOOD, "presence": {"hold_s": 120}, "window_s": 30, "mqtt": {**GOOD["mqtt"], "password": "old"}}
    server = {"v": 1, "device_id": GOOD["device_id"], "mqtt": {**GOOD["mqtt"], "password": "new"},
              "window_s": 60, "status_s": 300, "ntp": ["pool.ntp.org"]}
    cfg = build_config(current, server, wifi=None)
    assert cfg["mqtt"]["password"] == "new" and cfg["presence"] == {"hold_s": 120} and cfg["window_s"] == 30
    assert cfg["wifi"] == GOOD["wifi"]
    other = build_config({**current, "device_id": "cf-000000000000"}, server, wifi={"ssid": "a", "password": ""})
    assert "presence" not in other and other["window_s"] == 60     # another node's file is not inherited
