"""OTA campaigns on a migrated SQLite and PostgreSQL: the engine run at fixed times
against acks stored through ingest's own store, as the nodes send them (PROTOCOL.md,
docs/ota.md). Waves advance on success, a failure beyond the limit halts the campaign
and cancels the devices not yet sent, timeouts and refused commands fail a device,
pause / resume / abort, targets. The end-to-end runs with real nodes are in
tests/e2e/test_ota_campaign.py; the HTTP API is at the end of this file."""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import insert, select

from fleet_server.campaigns import model as m, service as svc
from fleet_server.campaigns.engine import tick, unsend
from fleet_server.campaigns.targets import BadTarget, Target
from fleet_server.db.campaign_schema import command_progress
from fleet_server.db.firmware_schema import firmware_releases
from fleet_server.db.schema import commands
from fleet_server.ingest.store import Received, store_batch
from fleet_server.protocol import Ack, Rejected, Status, decode
from fleet_server.registry import service as registry
from tests.utils.databases import load_registry, migrated_engine
from tests.utils.services import Recorder, wait_until

T0 = 1_790_000_000.0
SCHOOLS = """code,name,county_code,stage,day_start,day_end,weekdays
S1,西湖区升级小学,330106,primary,07:30,17:30,12345
S2,龙港市升级中学,330383,senior,07:30,17:30,12345
"""
ROOMS = "school_code,room_code,name,type,capacity\n" + "".join(
    f"S{1 + i // 10},R{i:02d},教室{i},classroom,45\n" for i in range(20))
DEVICES = [f"cf-0000000c{i:04x}" for i in range(20)]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    with migrated_engine(request, tmp_path, "campaigns") as eng:
        load_registry(eng, ("schools", SCHOOLS), ("rooms", ROOMS))
        with eng.begin() as conn:
            room_ids = dict(conn.execute(select(registry.rooms.c.code, registry.rooms.c.id)).all())
            for i, dev in enumerate(DEVICES):
                registry.assign_device(conn, dev, room_ids[f"R{i:02d}"], int(T0) - 86400, now_s=T0)
            conn.execute(insert(firmware_releases), [release_row(v) for v in ("0.3.0", "0.3.1")])
        store(eng, T0, *(Status(d, True, ts=int(T0), fw="0.2.0", hw="sim") for d in DEVICES))
        yield eng


def release_row(version: str) -> dict:
    return {"version": version, "manifest_sha256": "ab" * 32, "manifest_size": 300, "signature": "cd" * 64,
            "public_key": "ef" * 32, "boards": json.dumps(["sim"]), "min_micropython": "1.23.0", "files": 3,
            "total_bytes": 9000, "uploaded_s": T0}


def store(engine, received_s: float, *msgs) -> None:
    with engine.begin() as conn:
        store_batch(conn, [Received(msg, received_s) for msg in msgs])


def create(engine, version="0.3.0", target=Target("all"), **kw) -> dict:
    with engine.begin() as conn:
        return svc.create(conn, name="spring fix", version=version, target=target, base_url="http://fleet:8000/",
                          created_by="op", now_s=T0, **kw)


def run(engine, now_s: float, **kw) -> list[tuple[int, str, dict]]:
    with engine.begin() as conn:
        return tick(conn, now_s, **kw).sent


def node_acks(engine, now_s: float, sent, stages=("accepted", "download", "verified", "installed", "confirmed"),
              version="0.3.0") -> None:
    """Each sent device acks its command through the given stages, as firmware/ota.py does."""
    for _, dev, cmd in sent:
        msgs = []
        for stage in stages:
            ok = stage not in ("rolled_back", "refused")
            err = None if ok else f"{stage}: boot_failed"
            msgs.append(Ack(dev, cmd["id"], ok, err, int(now_s), stage=stage,
                            pct=50 if stage == "download" else None,
                            fw=version if stage in ("installed", "confirmed", "rolled_back") else None))
        store(engine, now_s, *msgs)


def campaign(engine, cid: int) -> dict:
    with engine.connect() as conn:
        return svc.get(conn, cid)


def device_states(engine, cid: int) -> dict[str, str]:
    with engine.connect() as conn:
        return {d["device_id"]: d["state"] for d in svc.devices(conn, cid, limit=None)["items"]}


def test_waves_advance_on_success_and_every_transition_is_logged(engine):
    c = create(engine)
    assert c["devices"] == 20 and c["state"] == "running"
    assert [w["devices"] for w in c["per_wave"]] == [1, 1, 8, 10]   # 1 %, 10 %, 50 %, 100 % of 20
    waves_sent = []
    now = T0
    for _ in range(4):
        now += 10
        sent = run(engine, now)
        waves_sent.append(len(sent))
        assert {cmd["op"] for _, _, cmd in sent} == {"ota"}
        assert all(cmd["args"]["url"] == "http://fleet:8000/firmware/0.3.0/manifest.json"
                   and cmd["args"]["sha256"] == "ab" * 32 and cmd["exp"] == int(now) + m.DEFAULT_COMMAND_TTL_S
                   for _, _, cmd in sent)
        assert run(engine, now + 1) == []         # nothing more until this wave is done
        node_acks(engine, now + 2, sent)
    assert waves_sent == [1, 1, 8, 10]
    run(engine, now + 10)
    c = campaign(engine, c["id"])
    assert c["state"] == "completed" and c["by_state"]["confirmed"] == 20 and c["failures"] == 0, c
    with engine.connect() as conn:
        events = svc.events(conn, c["id"], limit=None)
        one = [e["state"] for e in svc.events(conn, c["id"], device_id=events[1]["device_id"])]
        assert conn.execute(select(commands).where(commands.c.op == "ota")).all().__len__() == 20
    assert one == ["sent", "downloading", "verified", "installed", "confirmed"]
    campaign_level = [(e["state"], e["reason"].split(" (")[0]) for e in events if e["device_id"] is None]
    assert campaign_level == [("running", "created by op: 20 devices in 4 waves"),
                              ("wave", "wave 2 of 4 started"), ("wave", "wave 3 of 4 started"),
                              ("wave", "wave 4 of 4 started"), ("completed", "20 of 20 devices on the release")]
    assert set(device_states(engine, c["id"]).values()) == {"confirmed"}


def test_a_release_that_rolls_back_halts_the_campaign_and_later_waves_never_get_it(engine):
    c = create(engine, "0.3.1")
    sent = run(engine, T0 + 10)
    assert len(sent) == 1
    node_acks(engine, T0 + 20, sent, ("accepted", "download", "verified", "installed", "rolled_back"),
              version="0.3.1")
    assert run(engine, T0 + 30) == []
    c = campaign(engine, c["id"])
    assert c["state"] == "halted" and c["reason"] == "1 of 1 devices sent failed or rolled back (limit 10 %)", c
    assert c["by_state"]["rolled_back"] == 1 and c["by_state"]["cancelled"] == 19, c
    states = device_states(engine, c["id"])
    assert states[sent[0][1]] == "rolled_back"
    with engine.connect() as conn:
        assert len(conn.execute(select(commands).where(commands.c.op == "ota")).all()) == 1
        rolled = svc.devices(conn, c["id"], state="rolled_back")["items"][0]
        assert rolled["reason"] == "rolled_back: boot_failed"
        with pytest.raises(svc.CampaignError, match="halted campaign is not resumed"):
            svc.set_state(conn, c["id"], "resume", by="op", now_s=T0 + 40)
    assert run(engine, T0 + 3600) == []   # stays halted


def test_stages_whose_acks_were_lost_are_logged_as_implied(engine):
    c = create(engine, waves=[100])
    sent = run(engine, T0)
    node_acks(engine, T0 + 1, sent[:1], ("accepted", "installed"))
    node_acks(engine, T0 + 1, sent[1:2], ("rolled_back",), version="0.3.0")
    run(engine, T0 + 2)
    with engine.connect() as conn:
        one = [(e["state"], e["reason"]) for e in svc.events(conn, c["id"], device_id=sent[0][1])]
        two = [(e["state"], e["reason"]) for e in svc.events(conn, c["id"], device_id=sent[1][1])]
    assert one == [("sent", f"command {sent[0][2]['id']}"), ("downloading", None),
                   ("verified", "implied by installed (its ack did not arrive)"), ("installed", None)]
    assert [s for s, _ in two] == ["sent", "downloading", "verified", "installed", "rolled_back"]
    assert two[-1][1] == "rolled_back: boot_failed" and two[1][1].startswith("implied by rolled_back")


def test_a_wave_below_the_success_share_halts_even_under_the_failure_limit(engine):
    c = create(engine, waves=[50, 100], success_pct=95, max_failure_pct=20)
    sent = run(engine, T0 + 10)
    assert len(sent) == 10
    node_acks(engine, T0 + 20, sent[:9])
    node_acks(engine, T0 + 20, sent[9:], ("accepted", "refused"))   # 1 of 10: 10 % <= 20 %
    run(engine, T0 + 30)
    c = campaign(engine, c["id"])
    assert c["state"] == "halted" and c["reason"] == "wave 1: 9 of 10 confirmed, below 95 %", c
    assert c["by_state"] == {**c["by_state"], "confirmed": 9, "failed": 1, "cancelled": 10}


def test_timeouts_and_commands_refused_by_the_node_fail_the_device(engine):
    c = create(engine, waves=[20, 100], max_failure_pct=100, success_pct=0, wave_timeout_s=600)
    sent = run(engine, T0)
    assert len(sent) == 4
    (_, expired, cmd_e), (_, quiet, _), (_, slow, cmd_s), (_, busy, cmd_b) = sent
    store(engine, T0 + 5, Ack(expired, cmd_e["id"], False, "expired", int(T0)),
          Ack(slow, cmd_s["id"], True, None, int(T0), stage="accepted"),
          Ack(busy, cmd_b["id"], False, "busy: pending confirmation", int(T0)))
    run(engine, T0 + 60)
    states = device_states(engine, c["id"])
    assert (states[expired], states[quiet], states[slow], states[busy]) == ("failed", "sent", "downloading", "failed")
    run(engine, T0 + 601)
    with engine.connect() as conn:
        failed = {d["device_id"]: d["reason"] for d in svc.devices(conn, c["id"], state="failed")["items"]}
    assert failed == {expired: "expired", busy: "busy: pending confirmation",
                      quiet: "timeout: no result 600 s after the command",
                      slow: "timeout: no result 600 s after the command"}
    assert campaign(engine, c["id"])["current_wave"] == 2    # success_pct 0: the next wave goes on


def test_pause_resume_abort_and_in_flight_updates_are_still_tracked(engine):
    c = create(engine, waves=[10, 100])
    first = run(engine, T0)
    assert len(first) == 2
    with engine.begin() as conn:
        assert svc.set_state(conn, c["id"], "pause", by="op", now_s=T0 + 1)["state"] == "paused"
        with pytest.raises(svc.CampaignError, match="cannot pause a paused campaign"):
            svc.set_state(conn, c["id"], "pause", by="op", now_s=T0 + 1)
    node_acks(engine, T0 + 2, first)
    assert run(engine, T0 + 3) == []                          # paused: nothing new is sent
    assert campaign(engine, c["id"])["by_state"]["confirmed"] == 2   # but progress is followed
    with engine.begin() as conn:
        svc.set_state(conn, c["id"], "resume", by="op", now_s=T0 + 4)
    second = run(engine, T0 + 5)
    assert len(second) == 18
    with engine.begin() as conn:
        svc.set_state(conn, c["id"], "abort", by="op", now_s=T0 + 6)
    node_acks(engine, T0 + 7, second[:3])
    run(engine, T0 + 8)
    c = campaign(engine, c["id"])
    assert c["state"] == "aborted" and c["by_state"]["confirmed"] == 5 and c["by_state"]["sent"] == 15, c


def test_max_in_flight_limits_how_many_updates_run_at_once(engine):
    create(engine, waves=[100])
    assert len(run(engine, T0, max_in_flight=7)) == 7
    assert run(engine, T0 + 1, max_in_flight=7) == []
    sent = run(engine, T0 + 2, max_in_flight=20)
    assert len(sent) == 13


def test_at_most_max_per_school_updates_run_at_once_in_one_school(engine):
    create(engine, waves=[100])           # 10 devices in each of S1 and S2
    sent = run(engine, T0, max_per_school=3)
    assert len(sent) == 6
    with engine.connect() as conn:
        schools = dict(conn.execute(select(registry.rooms.c.code, registry.rooms.c.school_id)).all())
    per_school = {}
    for _, dev, _ in sent:
        s = schools[f"R{DEVICES.index(dev):02d}"]
        per_school[s] = per_school.get(s, 0) + 1
    assert sorted(per_school.values()) == [3, 3]
    assert run(engine, T0 + 1, max_per_school=3) == []
    node_acks(engine, T0 + 2, sent[:2])
    assert len(run(engine, T0 + 3, max_per_school=3)) == 2


def test_an_unpublished_command_goes_back_to_pending(engine):
    c = create(engine, waves=[100])
    assert run(engine, T0, can_send=False) == []
    sent = run(engine, T0 + 1, max_in_flight=1)
    cid, dev, cmd = sent[0]
    with engine.begin() as conn:
        unsend(conn, cid, dev, cmd["id"], "broker unreachable", T0 + 2)
        assert conn.execute(select(commands).where(commands.c.cmd_id == cmd["id"])).first() is None
    assert device_states(engine, c["id"])[dev] == "pending"
    again = run(engine, T0 + 3, max_in_flight=1)
    assert again[0][1] == dev and again[0][2]["id"] != cmd["id"]


def test_targets_percentages_busy_devices_and_devices_already_on_the_version(engine):
    store(engine, T0 + 1, Status(DEVICES[0], True, ts=int(T0), fw="0.3.0", hw="sim"))
    school_1 = create(engine, target=Target("region", region=330106))           # 西湖区: S1's 10 rooms
    assert school_1["devices"] == 10 and school_1["by_state"]["skipped"] == 1
    with pytest.raises(svc.CampaignError, match="9 of these devices are in another active campaign"):
        create(engine, target=Target("all"))
    with engine.begin() as conn:
        svc.set_state(conn, school_1["id"], "abort", by="op", now_s=T0 + 2)
    half = create(engine, target=Target("region", region=330000, percent=50))   # Zhejiang, half
    assert half["devices"] == 10
    with engine.begin() as conn:
        svc.set_state(conn, half["id"], "abort", by="op", now_s=T0 + 3)
    few = create(engine, target=Target("devices", devices=tuple(DEVICES[5:8])))
    assert few["devices"] == 3 and [w["devices"] for w in few["per_wave"]] == [1, 0, 1, 1]
    with engine.begin() as conn:
        svc.set_state(conn, few["id"], "abort", by="op", now_s=T0 + 4)
    for bad, msg in ((Target("region", region=110000), "no region 110000"),
                     (Target("school", school_id=999), "no school 999"),
                     (Target("devices", devices=("cf-00000000ffff",)), "unknown devices: cf-00000000ffff"),
                     (Target("all", percent=0), "percent must be above 0")):
        with pytest.raises(BadTarget, match=msg):
            create(engine, target=bad)
    with pytest.raises(svc.CampaignError, match="no release 9.9.9"):
        create(engine, "9.9.9")
    with pytest.raises(ValueError, match="waves must increase"):
        create(engine, waves=[50, 10, 100])


def test_progress_acks_are_decoded_and_stored_once_per_stage(engine):
    ack = decode("campus/v1/cf-0000000c0001/ack",
                 b'{"v":1,"id":"c-1","ok":true,"err":null,"ts":5,"ota":"download","pct":75}', T0)
    assert (ack.stage, ack.pct, ack.fw) == ("download", 75, None)
    with pytest.raises(Rejected):
        decode("campus/v1/cf-0000000c0001/ack", b'{"v":1,"id":"c-1","ok":true,"err":null,"ts":5,"ota":"dance"}', T0)
    store(engine, T0, Ack(DEVICES[1], "c-1", True, None, 5, stage="download", pct=25))
    store(engine, T0 + 1, Ack(DEVICES[1], "c-1", True, None, 5, stage="download", pct=75),
          Ack(DEVICES[1], "c-1", True, None, 5, stage="download", pct=75))
    with engine.connect() as conn:
        rows = conn.execute(select(command_progress)).all()
    assert [(r.stage, r.pct) for r in rows] == [("download", 75)]


# --- over HTTP ------------------------------------------------------------------------------

def test_campaign_api_create_follow_and_control(server, mosquitto):
    with server.app.state.engine.begin() as conn:
        conn.execute(insert(firmware_releases).values(**release_row("0.3.0")))
    devices = [f"cf-0000000d{i:04x}" for i in range(3)]
    with server.app.state.engine.begin() as conn:
        store_batch(conn, [Received(Status(d, True, ts=int(time.time()), fw="0.2.0", hw="sim"), time.time())
                           for d in devices])
    rec = Recorder(mosquitto.host, mosquitto.port, "campus/v1/+/cmd")
    try:
        r = server.http.post("/api/v1/firmware/campaigns", json={
            "name": "pilot", "version": "0.3.0", "target": {"scope": "devices", "devices": devices},
            "waves": [34, 100]})
        assert r.status_code == 201, r.text
        c = r.json()
        assert c["devices"] == 3 and [w["devices"] for w in c["per_wave"]] == [2, 1]
        cmds = wait_until(lambda: len(rec.of("cmd")) >= 2 and [json.loads(p) for p in rec.of("cmd")], 20, 0.2,
                          "the first wave's commands")
        assert len(cmds) == 2 and cmds[0]["op"] == "ota"
        assert cmds[0]["args"]["url"] == f"{server.base_url}/firmware/0.3.0/manifest.json"
    finally:
        rec.close()
    bad = server.http.post("/api/v1/firmware/campaigns", json={
        "name": "x", "version": "0.3.0", "target": {"scope": "devices", "devices": devices}})
    assert bad.status_code == 409 and "another active campaign" in bad.json()["detail"]
    assert server.http.post("/api/v1/firmware/campaigns", json={
        "name": "x", "version": "0.3.0", "target": {"scope": "all"}, "waves": [100, 50]}).status_code == 422
    assert server.http.post("/api/v1/firmware/campaigns", json={
        "name": "x", "version": "7.7.7", "target": {"scope": "all"}}).status_code == 409
    listed = server.get("/api/v1/firmware/campaigns")
    assert listed["total"] == 1 and listed["items"][0]["id"] == c["id"]
    page = server.get(f"/api/v1/firmware/campaigns/{c['id']}/devices")
    assert sorted(d["state"] for d in page["items"]) == ["pending", "sent", "sent"]
    csv_text = server.http.get(f"/api/v1/firmware/campaigns/{c['id']}/devices?format=csv").text
    assert csv_text.count("\n") == 4 and "device_id" in csv_text
    assert server.http.post(f"/api/v1/firmware/campaigns/{c['id']}/pause").json()["state"] == "paused"
    assert server.http.post(f"/api/v1/firmware/campaigns/{c['id']}/pause").status_code == 409
    assert server.http.post(f"/api/v1/firmware/campaigns/{c['id']}/abort").json()["state"] == "aborted"
    events = server.get(f"/api/v1/firmware/campaigns/{c['id']}/events")
    assert [e["state"] for e in events if e["device_id"] is None] == ["running", "paused", "aborted"]
    assert server.http.get("/api/v1/firmware/campaigns/999").status_code == 404
    actions = {e["action"] for e in server.get("/api/v1/audit", params={"action": "campaign."})["items"]}
    assert actions == {"campaign.create", "campaign.pause", "campaign.abort"}


def test_one_device_updated_through_the_commands_api(server, mosquitto):
    with server.app.state.engine.begin() as conn:
        conn.execute(insert(firmware_releases).values(**release_row("0.3.0")))
    dev = "cf-0000000e0001"
    with server.app.state.engine.begin() as conn:
        store_batch(conn, [Received(Status(dev, True, ts=int(time.time()), fw="0.2.0", hw="sim"), time.time())])
    rec = Recorder(mosquitto.host, mosquitto.port, f"campus/v1/{dev}/cmd")
    try:
        r = server.http.post(f"/api/v1/devices/{dev}/commands", json={"op": "ota", "args": {"version": "0.3.0"}})
        assert r.status_code == 202, r.text
        cmd = wait_until(lambda: [json.loads(p) for p in rec.of("cmd")] or None, 10, 0.1, "the ota command")[0]
    finally:
        rec.close()
    assert cmd["args"] == {"url": f"{server.base_url}/firmware/0.3.0/manifest.json", "version": "0.3.0",
                           "sha256": "ab" * 32, "size": 300, "sig": "cd" * 64}
    assert server.http.post(f"/api/v1/devices/{dev}/commands",
                            json={"op": "ota", "args": {"version": "0.0.1"}}).status_code == 404
    assert server.http.post(f"/api/v1/devices/{dev}/commands",
                            json={"op": "ota", "args": {"url": "http://evil/"}}).status_code == 422


def test_fleet_page_lists_campaigns_and_the_campaign_page_shows_the_api_figures(server):
    with server.app.state.engine.begin() as conn:
        conn.execute(insert(firmware_releases).values(**release_row("0.3.0")))
        store_batch(conn, [Received(Status(d, True, ts=int(time.time()), fw="0.2.0", hw="sim"), time.time())
                           for d in DEVICES[:4]])
    c = server.http.post("/api/v1/firmware/campaigns", json={
        "name": "页面", "version": "0.3.0", "target": {"scope": "devices", "devices": DEVICES[:4]},
        "waves": [50, 100]}).json()
    fleet = server.http.get("/fleet", params={"lang": "zh-CN"}).text
    assert f'data-figure="campaign.{c["id"]}.state" data-value="running"' in fleet and "固件升级任务" in fleet
    # The firmware spread beside it is the devices API's.
    spread = server.get("/api/v1/devices/firmware")["versions"]
    assert spread and spread[0]["fw"] == "0.2.0" and spread[0]["devices"] == 4
    for v in spread:
        assert f'data-figure="fw.{v["fw"] or "none"}.devices" data-value="{v["devices"]}"' in fleet
    wait_until(lambda: server.get(f"/api/v1/firmware/campaigns/{c['id']}")["by_state"]["sent"] == 2, 20, 0.2,
               "the first wave sent")
    html = server.http.get(f"/fleet/campaigns/{c['id']}", params={"lang": "en"}).text
    api = server.get(f"/api/v1/firmware/campaigns/{c['id']}/devices")["items"]
    for d in api:
        assert f'data-figure="device.{d["device_id"]}.ota" data-value="{d["state"]}"' in html
    assert 'id="campaign-pause"' in html and "next wave at &gt;= 90" in html
    assert server.http.get("/fleet/campaigns/999").status_code == 404


def test_campaign_cli_starts_shows_and_aborts(server):
    from typer.testing import CliRunner

    from fleet_server.cli import app as cli
    with server.app.state.engine.begin() as conn:
        conn.execute(insert(firmware_releases).values(**release_row("0.3.0")))
        store_batch(conn, [Received(Status(d, True, ts=int(time.time()), fw="0.2.0", hw="sim"), time.time())
                           for d in DEVICES[:2]])
    env = {"CAMPUSFLEET_TOKEN": server.token or ""}
    run_cli = lambda *args: CliRunner().invoke(cli, ["firmware", "campaign", *args, "--server", server.base_url],  # noqa: E731
                                               env=env)
    r = run_cli("start", "0.3.0", "--device", DEVICES[0], "--device", DEVICES[1], "--waves", "50,100")
    assert r.exit_code == 0 and "to 0.3.0 [0.3.0]: running, wave 1/2, 2 devices" in r.output, r.output
    cid = server.get("/api/v1/firmware/campaigns")["items"][0]["id"]
    r = run_cli("show", str(cid))
    assert r.exit_code == 0 and "wave 2 (100 %): 1 devices" in r.output, r.output
    r = run_cli("abort", str(cid))
    assert r.exit_code == 0 and ": aborted," in r.output, r.output
    r = run_cli("resume", str(cid))
    assert r.exit_code == 1 and "HTTP 409: cannot resume a aborted campaign" in r.output, r.output
    r = run_cli("start", "0.3.0", "--region", "330000", "--school", "1")
    assert r.exit_code == 2 and "choose one of --region, --school, --device" in r.output, r.output
