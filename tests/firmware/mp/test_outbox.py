"""Flash outbox on the real interpreter: round trip to the exact PROTOCOL.md payload,
replay after reboot, torn records, the full ring, and the 72 h size budget."""
import json
import os

from outbox import Outbox

ROOT = "ob_test"


def _wipe():
    try:
        for name in os.listdir(ROOT):
            os.remove(ROOT + "/" + name)
        os.rmdir(ROOT)
    except OSError:
        pass


def _fresh(**kw):
    _wipe()
    return Outbox(ROOT, **kw)


def _report(ts, occ=42):
    return {"ts": ts, "win": 60,
            "occ": {"occupied_s": occ, "present": True, "pir": 17, "radar_s": 40},
            "env": {"co2_ppm": 812, "temp_c": 22.4, "rh_pct": 48.1, "lux": 410, "noise_dba": 52.3}}


def _drain(ob, ack=True):
    """Send everything pending (pids from 1); optionally ack it all. -> [(suffix, doc)]"""
    out = []
    pid = 0
    while True:
        rec = ob.next_unsent()
        if rec is None:
            break
        pid += 1
        out.append((rec.suffix, json.loads(rec.payload)))
        ob.mark_sent(rec, pid)
        if ack:
            ob.ack(pid)
    return out


def test_window_round_trips_to_the_exact_protocol_payload():
    ob = _fresh()
    ob.append_window(1042, _report(1764300000))
    (suffix, doc), = _drain(ob)
    expected = _report(1764300000)
    expected["v"] = 1
    expected["seq"] = 1042
    assert suffix == "telemetry"
    assert doc == expected, doc
    _wipe()


def test_nulls_and_events_round_trip():
    ob = _fresh()
    r = _report(1764300060)
    r["occ"]["pir"] = None
    r["occ"]["radar_s"] = None
    for k in r["env"]:
        r["env"][k] = None
    ob.append_window(1, r)
    ob.append_event(2, 1764300042, True)
    out = _drain(ob)
    assert out[0][1]["occ"]["pir"] is None and out[0][1]["env"] == r["env"]
    assert out[1] == ("event", {"v": 1, "seq": 2, "ts": 1764300042, "present": True})
    _wipe()


def test_record_sizes_fit_72_hours_in_256_kb():
    ob = _fresh()
    for i in range(4320):  # 72 h of 60 s windows
        ob.append_window(i, _report(1764300000 + 60 * i))
    total = 0
    for name in os.listdir(ROOT):
        total += os.stat(ROOT + "/" + name)[6]
    print("72 h of windows on flash:", total, "bytes")
    assert total <= 256 * 1024, total
    assert len(ob) == 4320 and ob.dropped == 0
    _wipe()


def test_unacked_records_replay_in_seq_order_after_reboot():
    ob = _fresh()
    for i in range(10):
        ob.append_window(i, _report(1764300000 + 60 * i))
    for i in range(4):
        rec = ob.next_unsent()
        ob.mark_sent(rec, i + 1)
        ob.ack(i + 1)
    rec = ob.next_unsent()
    ob.mark_sent(rec, 99)  # in flight when the power goes
    ob.flush()
    ob2 = Outbox(ROOT)  # reboot
    seqs = [doc["seq"] for _, doc in _drain(ob2)]
    assert seqs == [4, 5, 6, 7, 8, 9], seqs
    assert ob2.max_seq == 9
    _wipe()


def test_lazy_pointer_only_replays_delivered_records_never_loses_one():
    ob = _fresh()
    for i in range(40):
        ob.append_window(i, _report(1764300000 + 60 * i))
    _drain(ob, ack=True)  # 40 acks: the pointer was saved at 32, not after
    ob2 = Outbox(ROOT)    # power cut without flush
    seqs = [doc["seq"] for _, doc in _drain(ob2)]
    assert seqs == list(range(32, 40)), seqs  # a few duplicates, server dedupes
    _wipe()


def test_rewind_resends_everything_in_flight_oldest_first():
    ob = _fresh()
    for i in range(5):
        ob.append_window(i, _report(1764300000 + 60 * i))
    for pid in (1, 2, 3):
        ob.mark_sent(ob.next_unsent(), pid)
    ob.ack(1)
    ob.rewind()  # link dropped with 2 and 3 in flight
    seqs = [doc["seq"] for _, doc in _drain(ob)]
    assert seqs == [1, 2, 3, 4]
    assert len(ob) == 0
    _wipe()


def test_out_of_order_ack_moves_pointer_only_over_delivered_prefix():
    ob = _fresh()
    for i in range(3):
        ob.append_window(i, _report(1764300000 + 60 * i))
    for pid in (1, 2, 3):
        ob.mark_sent(ob.next_unsent(), pid)
    ob.ack(2)
    assert len(ob) == 3
    ob.ack(1)
    assert len(ob) == 1
    ob.ack(3)
    assert len(ob) == 0
    assert ob.ack(3) is False  # a stray PUBACK is ignored
    _wipe()


def test_torn_record_is_cut_at_boot_and_later_appends_replay():
    ob = _fresh()
    for i in range(3):
        ob.append_window(i, _report(1764300000 + 60 * i))
    seg = ROOT + "/0"
    with open(seg, "ab") as f:
        f.write(b"\xcf\x01\x19\x03\x00\x00\x00\x10\x20")  # power lost mid-record
    ob2 = Outbox(ROOT)
    assert ob2.torn == 1 and len(ob2) == 3
    ob2.append_window(3, _report(1764300180))
    seqs = [doc["seq"] for _, doc in _drain(ob2)]
    assert seqs == [0, 1, 2, 3]
    _wipe()


def test_corrupted_byte_ends_the_segment_without_crashing():
    ob = _fresh()
    for i in range(3):
        ob.append_window(i, _report(1764300000 + 60 * i))
    with open(ROOT + "/0", "rb") as f:
        data = bytearray(f.read())
    data[40] ^= 0xFF  # inside the second record's body: its CRC fails
    with open(ROOT + "/0", "wb") as f:
        f.write(data)
    ob2 = Outbox(ROOT)
    seqs = [doc["seq"] for _, doc in _drain(ob2)]
    assert seqs == [0]
    _wipe()


def test_full_ring_drops_oldest_and_counts_it():
    ob = _fresh(segment_bytes=36 * 4, segments=3)  # 4 windows a segment, 12 in all
    for i in range(20):
        ob.append_window(i, _report(1764300000 + 60 * i))
    seqs = [doc["seq"] for _, doc in _drain(ob)]
    assert seqs == list(range(seqs[0], 20))
    assert ob.dropped == seqs[0] and ob.dropped >= 8
    assert len(ob) == 0
    _wipe()


def test_delivered_segments_are_removed():
    ob = _fresh(segment_bytes=36 * 2, segments=4)
    for i in range(6):
        ob.append_window(i, _report(1764300000 + 60 * i))
    _drain(ob)
    assert len(os.listdir(ROOT)) <= 2  # the live segment and the pointer
    _wipe()
