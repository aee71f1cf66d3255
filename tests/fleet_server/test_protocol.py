"""The server's decoder against PROTOCOL.md: what it accepts, and the reason it gives
for everything it refuses. Never raises anything but Rejected / Ignored."""
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_server.protocol import (
    MAX_PAYLOAD_BYTES, REJECT_REASONS, Event, Ignored, Rejected, Status, Window, decode,
)

NOW = 1_764_300_100.0
DEV = "cf-a1b2c3d4e5f6"
TOPIC = f"campus/v1/{DEV}/telemetry"


def window(**over) -> dict:
    doc = {"v": 1, "seq": 1042, "ts": 1764300000, "win": 60,
           "occ": {"occupied_s": 42, "present": True, "pir": 17, "radar_s": 40},
           "env": {"co2_ppm": 812, "temp_c": 22.4, "rh_pct": 48.1, "lux": 410, "noise_dba": 52.3}}
    for path, value in over.items():
        node = doc
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        if value is ...:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return doc


def enc(doc) -> bytes:
    return json.dumps(doc).encode()


def reason(topic: str, payload: bytes) -> str:
    with pytest.raises(Rejected) as e:
        decode(topic, payload, NOW)
    return e.value.reason


def test_protocol_example_window_decodes_to_every_field():
    w = decode(TOPIC, enc(window()), NOW)
    assert w == Window(DEV, 1042, 1764300000, 60, 42, True, 17, 40, 812, 22.4, 48.1, 410.0, 52.3)
    assert w.as_report() == window()


def test_null_and_missing_sensor_values_both_mean_absent():
    w = decode(TOPIC, enc(window(**{"occ.pir": None, "occ.radar_s": ..., "env": ...})), NOW)
    assert (w.pir, w.radar_s, w.co2_ppm, w.noise_dba) == (None, None, None, None)


def test_unknown_keys_are_ignored_for_forward_compatibility():
    doc = window()
    doc["future"] = {"x": 1}
    doc["env"]["pm25"] = 3
    assert isinstance(decode(TOPIC, enc(doc), NOW), Window)


BAD_CASES = [
    ("campus/v1/CF-A1B2C3D4E5F6/telemetry", enc(window()), "bad_topic"),
    (f"campus/v1/{DEV}/telemetry/extra", enc(window()), "bad_topic"),
    (f"campus/v1/{DEV}/metrics", enc(window()), "bad_topic"),
    (f"campus/v2/{DEV}/telemetry", enc(window()), "bad_topic"),
    (TOPIC, enc({**window(), "pad": "x" * MAX_PAYLOAD_BYTES}), "oversize"),
    (TOPIC, b"{not json", "not_json"),
    (TOPIC, b"\xff\xfe{}", "not_json"),
    (TOPIC, b'{"v":1,"seq":1,"ts":1764300000,"win":60,"occ":{"occupied_s":1,"present":true},"env":{"temp_c":NaN}}', "not_json"),
    (TOPIC, b"[1,2,3]", "not_object"),
    (TOPIC, b'"telemetry"', "not_object"),
    (TOPIC, enc(window(v=2)), "bad_version"),
    (TOPIC, enc(window(v=...)), "bad_version"),
    (TOPIC, enc(window(v="1")), "bad_version"),
    (TOPIC, enc(window(v=True)), "bad_version"),
    (TOPIC, enc(window(seq=...)), "missing_field"),
    (TOPIC, enc(window(occ=...)), "missing_field"),
    (TOPIC, enc(window(**{"occ.present": ...})), "missing_field"),
    (TOPIC, enc(window(seq="1042")), "wrong_type"),
    (TOPIC, enc(window(seq=1042.0)), "wrong_type"),
    (TOPIC, enc(window(**{"occ.occupied_s": True})), "wrong_type"),
    (TOPIC, enc(window(**{"occ.present": 1})), "wrong_type"),
    (TOPIC, enc(window(**{"env.co2_ppm": 812.5})), "wrong_type"),
    (TOPIC, enc(window(**{"env.temp_c": "22.4"})), "wrong_type"),
    (TOPIC, enc(window(env=[1])), "wrong_type"),
    (TOPIC, enc(window(seq=-1)), "out_of_range"),
    (TOPIC, enc(window(seq=2**31)), "out_of_range"),
    (TOPIC, enc(window(win=5, ts=1764300000)), "out_of_range"),
    (TOPIC, enc(window(ts=1764300030)), "out_of_range"),   # not aligned to win
    (TOPIC, enc(window(**{"occ.occupied_s": 61})), "out_of_range"),
    (TOPIC, enc(window(**{"env.co2_ppm": 10001})), "out_of_range"),
    (TOPIC, enc(window(**{"env.temp_c": 85.1})), "out_of_range"),
    (TOPIC, enc(window(**{"env.rh_pct": -0.1})), "out_of_range"),
    (TOPIC, enc(window(**{"env.noise_dba": 141})), "out_of_range"),
    (TOPIC, enc(window(ts=1764300000 + 600)), "bad_ts"),   # 500 s ahead of NOW
    (TOPIC, enc(window(ts=1764300000 - 36 * 86400)), "bad_ts"),
    (f"campus/v1/{DEV}/event", enc({"v": 1, "seq": 3, "ts": 1764300042}), "missing_field"),
    (f"campus/v1/{DEV}/status", enc({"v": 1, "online": "yes"}), "wrong_type"),
    (f"campus/v1/{DEV}/status", enc({"v": 1, "online": True, "reset": "cosmic_ray"}), "out_of_range"),
    (f"campus/v1/{DEV}/status", enc({"v": 1, "online": True, "sensors": {"co2": "broken"}}), "out_of_range"),
    (f"campus/v1/{DEV}/ack", enc({"v": 1, "ok": True, "ts": 1764300000}), "missing_field"),
]


@pytest.mark.parametrize("topic,payload,expected", BAD_CASES)
def test_each_bad_message_is_rejected_with_its_reason(topic, payload, expected):
    assert reason(topic, payload) == expected


def test_every_reject_reason_is_exercised_above():
    # Keeps the table honest: a new reason needs a case.
    assert {case[2] for case in BAD_CASES} == set(REJECT_REASONS)


def test_event_status_will_and_ack_decode():
    e = decode(f"campus/v1/{DEV}/event", b'{"v":1,"seq":1043,"ts":1764300042,"present":true}', NOW)
    assert e == Event(DEV, 1043, 1764300042, True)
    will = decode(f"campus/v1/{DEV}/status", b'{"v":1,"online":false}', NOW)
    assert will == Status(DEV, False)
    birth = decode(f"campus/v1/{DEV}/status", enc({
        "v": 1, "online": True, "ts": 1764300000, "fw": "0.3.0", "hw": "s3-v1", "boot": 12, "reset": "power",
        "uptime_s": 3600, "heap_free": 61234, "rssi": -61, "ip": "10.1.2.3", "outbox": 0, "clock": "ntp",
        "sensors": {"co2": "ok", "th": "ok", "lux": "ok", "radar": "missing", "pir": "ok", "mic": "failed"}}), NOW)
    assert birth.fw == "0.3.0" and birth.sensors["mic"] == "failed" and birth.rssi == -61
    ack = decode(f"campus/v1/{DEV}/ack", b'{"v":1,"id":"c-7f3a","ok":false,"err":"expired","ts":1764300012}', NOW)
    assert (ack.cmd_id, ack.ok, ack.err) == ("c-7f3a", False, "expired")


def test_cmd_topic_is_the_servers_own_echo_and_is_ignored():
    with pytest.raises(Ignored):
        decode(f"campus/v1/{DEV}/cmd", b'{"v":1,"id":"c-1","op":"sync"}', NOW)


@settings(max_examples=400, deadline=None)
@given(topic=st.one_of(st.just(TOPIC), st.text(max_size=60)), payload=st.binary(max_size=1100))
def test_fuzz_arbitrary_bytes_only_ever_reject(topic, payload):
    try:
        decode(topic, payload, time.time())
    except (Rejected, Ignored):
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(occ=st.dictionaries(st.sampled_from(["occupied_s", "present", "pir", "radar_s"]), json_values),
       env=json_values, seq=json_values)
def test_fuzz_structured_windows_decode_or_reject(occ, env, seq):
    doc = {"v": 1, "seq": seq, "ts": 1764300000, "win": 60, "occ": occ, "env": env}
    try:
        w = decode(TOPIC, enc(doc), NOW)
    except Rejected:
        return
    # Whatever is accepted is within the contract.
    assert 0 <= w.occupied_s <= w.win and isinstance(w.present, bool)
    assert w.co2_ppm is None or 0 <= w.co2_ppm <= 10000
