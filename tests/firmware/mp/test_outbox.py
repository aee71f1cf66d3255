"""Flash outbox on the real interpreter: round trip to the exact PROTOCOL.md payload,
replay after reboot, torn records, the full ring, and the 72 h size budget. (seq across
reboots: test_outbox_seq.py.)"""
import json
import os

from outbox import Outbox

ROOT = "ob_test"
SEQ = "ob_test_seq.dat"


def _wipe():
    try:
        for name in os.listdir(ROOT):
            os.remove(ROOT + "/" + name)
        os.rmdir(ROOT)
    except OSError:
        pass
    try:
        os.remove(SEQ)
    except OSError:
        pass


def _open(**kw):
    return Outbox(ROOT, seq_path=SEQ, **kw)


def _fresh(first_seq=0, **kw):
    """An empty outbox whose first record gets seq first_seq."""
    _wipe()
    if first_seq:
        with open(SEQ, "w") as f:
            f.write(str(first_seq))
    return _open(**kw)


def _report(ts, occ=42):
    """A window report as WindowAggregator gives it: the fields in PROTOCOL.md's order."""
    return (ts, 60, occ, True, 17, 40, 812, 22.4, 48.1, 410, 52.3)


def _doc(report, seq):
    """The PROTOCOL.md telemetry payload that report must become."""
    ts, win, occ, present, pir, radar, co2, temp, rh, lux, noise = report
    return {"v": 1, "seq": seq, "ts": ts, "win": win,
            "occ": {"occupied_s": occ, "present": present, "pir": pir, "radar_s": radar},
            "env": {"co2_ppm": co2, "temp_c": temp, "rh_pct": rh, "lux": lux, "noise_dba": noise}}


def _append(ob, n, ts0=1764300000):
    """n windows, one a minute."""
    for i in range(n):
        ob.append_window(_report(ts0 + 60 * i))


def _drain(ob, ack=True):
    """Send everything pending (pids from 1); optionally ack it all. -> [(suffix, doc)]"""
    out = []
    pid = 0
    while True:
        rec = ob.next_unsent()
        if rec is None:
            break
        pid += 1
        suffix, payload = rec
        out.append((suffix, json.loads(payload)))
        ob.mark_sent(pid)
        if ack:
            ob.ack(pid)
    return out


def test_window_round_trips_to_the_exact_protocol_payload():
    ob = _fresh(first_seq=1042)
    assert ob.append_window(_report(1764300000)) == 1042
    (suffix, doc), = _drain(ob)
    assert suffix == "telemetry"
    assert doc == _doc(_report(1764300000), 1042), doc
    _wipe()


def test_payload_is_compact_json_in_protocol_order():
    ob = _fresh(first_seq=1042)
    ob.append_window(_report(1764300000))
    ob.append_event(1764300042, True)
    assert ob.next_unsent() == ("telemetry", (
        '{"v":1,"seq":1042,"ts":1764300000,"win":60,'
        '"occ":{"occupied_s":42,"present":true,"pir":17,"radar_s":40},'
        '"env":{"co2_ppm":812,"temp_c":22.4,"rh_pct":48.1,"lux":410,"noise_dba":52.3}}'))
    ob.mark_sent(1)
    assert ob.next_unsent() == ("event", '{"v":1,"seq":1043,"ts":1764300042,"present":true}')
    _wipe()


def test_values_round_trip_at_their_limits():
    # Nulls, zero, negative temperatures, one decimal, the largest values a record holds.
    ob = _fresh()
    reports = [
        (1764300000, 60, 0, False, None, None, None, None, None, None, None),
        (1764300060, 900, 900, True, 0, 0, 0, 0.0, 0.0, 0, 0.0),
        (1764300120, 60, 60, True, 65534, 60, 10000, -40.0, 100.0, 200000, 140.0),
        (1764300180, 60, 1, False, 3, 1, 415, -0.5, 0.1, 3, 33.7),
    ]
    for r in reports:
        ob.append_window(r)
    out = _drain(ob)
    for seq, (r, (suffix, doc)) in enumerate(zip(reports, out)):
        assert suffix == "telemetry" and doc == _doc(r, seq), (doc, _doc(r, seq))
        for k in ("temp_c", "rh_pct", "noise_dba"):  # numbers stay numbers, not ints
            assert doc["env"][k] is None or isinstance(doc["env"][k], float), doc
    _wipe()


def test_nulls_and_events_round_trip():
    ob = _fresh(first_seq=1)
    r = (1764300060, 60, 42, True, None, None, None, None, None, None, None)
    assert ob.append_window(r) == 1
    assert ob.append_event(1764300042, True) == 2
    out = _drain(ob)
    assert out[0][1]["occ"]["pir"] is None and out[0][1]["env"] == _doc(r, 1)["env"]
    assert out[1] == ("event", {"v": 1, "seq": 2, "ts": 1764300042, "present": True})
    _wipe()


def test_record_sizes_fit_72_hours_in_256_kb():
    ob = _fresh()
    _append(ob, 4320)  # 72 h of 60 s windows
    total = 0
    for name in os.listdir(ROOT):
        total += os.stat(ROOT + "/" + name)[6]
    print("72 h of windows on flash:", total, "bytes")
    assert total <= 256 * 1024, total
    assert len(ob) == 4320 and ob.dropped == 0
    _wipe()


def test_unacked_records_replay_in_seq_order_after_reboot():
    ob = _fresh()
    _append(ob, 10)
    for i in range(4):
        ob.next_unsent()
        ob.mark_sent(i + 1)
        ob.ack(i + 1)
    ob.next_unsent()
    ob.mark_sent(99)  # in flight when the power goes
    ob.flush()
    ob2 = _open()  # reboot
    seqs = [doc["seq"] for _, doc in _drain(ob2)]
    assert seqs == [4, 5, 6, 7, 8, 9], seqs
    assert ob2.max_seq == 9
    assert ob2.append_event(1764300700, False) > 9  # seq goes on after a reboot
    _wipe()


def test_lazy_pointer_only_replays_delivered_records_never_loses_one():
    ob = _fresh()
    _append(ob, 40)
    _drain(ob, ack=True)  # 40 acks: the pointer was saved at 32, not after
    ob2 = _open()         # power cut without flush
    seqs = [doc["seq"] for _, doc in _drain(ob2)]
    assert seqs == list(range(32, 40)), seqs  # a few duplicates, server dedupes
    _wipe()


def test_rewind_resends_everything_in_flight_oldest_first():
    ob = _fresh()
    _append(ob, 5)
    for pid in (1, 2, 3):
        ob.next_unsent()
        ob.mark_sent(pid)
    ob.ack(1)
    ob.rewind()  # link dropped with 2 and 3 in flight
    seqs = [doc["seq"] for _, doc in _drain(ob)]
    assert seqs == [1, 2, 3, 4]
    assert len(ob) == 0
    _wipe()


def test_out_of_order_ack_moves_pointer_only_over_delivered_prefix():
    ob = _fresh()
    _append(ob, 3)
    for pid in (1, 2, 3):
        ob.next_unsent()
        ob.mark_sent(pid)
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
    _append(ob, 3)
    seg = ROOT + "/0"
    with open(seg, "ab") as f:
        f.write(b"\xcf\x01\x19\x03\x00\x00\x00\x10\x20")  # power lost mid-record
    ob2 = _open()
    assert ob2.torn == 1 and len(ob2) == 3
    assert os.stat(seg)[6] == 3 * 36  # the torn tail is cut off
    assert ob2.append_window(_report(1764300180)) > 2
    seqs = [doc["seq"] for _, doc in _drain(ob2)]
    assert seqs[:3] == [0, 1, 2] and len(seqs) == 4, seqs
    _wipe()


def test_corrupted_byte_ends_the_segment_without_crashing():
    ob = _fresh()
    _append(ob, 3)
    with open(ROOT + "/0", "rb") as f:
        data = bytearray(f.read())
    data[40] ^= 0xFF  # inside the second record's body: its CRC fails
    with open(ROOT + "/0", "wb") as f:
        f.write(data)
    ob2 = _open()
    seqs = [doc["seq"] for _, doc in _drain(ob2)]
    assert seqs == [0]
    _wipe()


def test_full_ring_drops_oldest_and_counts_it():
    ob = _fresh(segment_bytes=36 * 4, segments=3)  # 4 windows a segment, 12 in all
    _append(ob, 20)
    seqs = [doc["seq"] for _, doc in _drain(ob)]
    assert seqs == list(range(seqs[0], 20))
    assert ob.dropped == seqs[0] and ob.dropped >= 8
    assert len(ob) == 0
    _wipe()


def test_delivered_segments_are_removed():
    ob = _fresh(segment_bytes=36 * 2, segments=4)
    _append(ob, 6)
    _drain(ob)
    assert len(os.listdir(ROOT)) <= 2  # the live segment and the pointer
    _wipe()


def test_at_most_8_records_in_flight():
    ob = _fresh()
    _append(ob, 12)
    for pid in range(1, 9):
        assert ob.next_unsent() is not None
        ob.mark_sent(pid)
    assert ob.next_unsent() is None  # 8 await their PUBACK
    ob.ack(1)
    suffix, payload = ob.next_unsent()
    assert json.loads(payload)["seq"] == 8
    _wipe()
