"""Sensor faults at the bus level on a running virtual node: a part that starts
returning CRC errors or vanishes is reported failed, its values go null, and it comes
back by itself; garbage on the radar UART does not disturb presence; a board without
radar and microphone reports them missing and sends nulls."""
import json
from datetime import datetime, timedelta, timezone

from tests.utils.services import Recorder, wait_until


def statuses(rec):
    return [json.loads(p) for p in rec.of("status") if json.loads(p).get("online")]


def test_crc_errors_and_a_vanished_part_fail_then_recover_without_reboot(mosquitto, make_node):
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    device_id = "cf-0000fa570001"
    rec = Recorder(mosquitto.host, mosquitto.port, f"campus/v1/{device_id}/#")
    try:
        # 60x: the CO2 sensor answers with bad CRCs from sim minute 2 to 7, the SHT4x
        # is gone from minute 3 to 8.
        make_node(start=start, speed=60, device_id=device_id, status_s=60,
                  extra_sim={"faults": {"co2_crc": [[120, 300]], "th_missing": [[180, 300]]}})
        wait_until(lambda: any(s["sensors"]["co2"] == "failed" for s in statuses(rec)), 30, what="co2 failed")
        wait_until(lambda: any(s["sensors"]["th"] == "failed" for s in statuses(rec)), 30, what="th failed")
        windows = lambda: [json.loads(p) for p in rec.of("telemetry")]  # noqa: E731
        wait_until(lambda: any(w["env"]["co2_ppm"] is None for w in windows()), 30, what="null co2 window")
        # Back to ok without a reboot, and values again.
        wait_until(lambda: statuses(rec)[-1]["sensors"]["co2"] == "ok" and statuses(rec)[-1]["sensors"]["th"] == "ok",
                   60, what="both parts recovered")
        n = len(windows())
        wait_until(lambda: len(windows()) > n + 2, 20, what="windows after recovery")
        last = windows()[-1]
        assert last["env"]["co2_ppm"] is not None and last["env"]["temp_c"] is not None
        assert {s["boot"] for s in statuses(rec)} == {1}
    finally:
        rec.close()


def test_radar_garbage_is_resynced_and_presence_still_tracks_the_room(mosquitto, make_node):
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    device_id = "cf-0000fa570002"
    rec = Recorder(mosquitto.host, mosquitto.port, f"campus/v1/{device_id}/#")
    try:
        make_node(start=start, speed=120, device_id=device_id, scenario="classroom",
                  extra_sim={"faults": {"radar_garbage": [[0, 86400]]}})
        wait_until(lambda: len(rec.of("telemetry")) >= 10, 30, what="windows")
        assert all(s["sensors"]["radar"] == "ok" for s in statuses(rec))
    finally:
        rec.close()


def test_board_without_radar_and_mic_reports_missing_and_sends_nulls(mosquitto, make_node):
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    device_id = "cf-0000fa570003"
    rec = Recorder(mosquitto.host, mosquitto.port, f"campus/v1/{device_id}/#")
    try:
        make_node(start=start, speed=120, device_id=device_id,
                  extra_sim={"sensors": {"radar": False, "mic": False}})
        wait_until(lambda: len(rec.of("telemetry")) >= 3 and statuses(rec), 30, what="windows")
        s = statuses(rec)[0]
        assert s["sensors"]["radar"] == "missing" and s["sensors"]["mic"] == "missing"
        assert s["sensors"]["co2"] == "ok" and s["sensors"]["pir"] == "ok"
        for w in (json.loads(p) for p in rec.of("telemetry")):
            assert w["occ"]["radar_s"] is None and w["env"]["noise_dba"] is None
            assert w["occ"]["pir"] is not None and w["env"]["co2_ppm"] is not None
    finally:
        rec.close()
