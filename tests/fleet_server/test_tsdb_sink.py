"""The time-series sink against a real VictoriaMetrics (Debian `victoria-metrics`): exact
values land, offer() never waits on a dead or hung TSDB, drops are counted oldest first,
writing resumes after a restart, and odd items are counted, not fatal."""
from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleet_server.ingest.store import ACCEPTED, DUPLICATE, Received
from fleet_server.ingest.tsdb import TimeSeriesSink, accepted_windows, window_line
from fleet_server.protocol import Event, Window
from fleet_server.settings import Settings
from tests.utils.services import FleetServer, wait_until
from tests.utils.victoria import VictoriaMetrics

DEV_A = "cf-00000000a001"
DEV_B = "cf-00000000b002"
# Recent, window-aligned timestamps (the protocol rejects windows older than 35 days).
BASE_TS = (int(time.time()) - 2 * 86400) // 60 * 60


def window(device_id: str, k: int, **env) -> Window:
    """Window number k of a device; env overrides the readings."""
    readings = {"co2_ppm": 700 + k, "temp_c": 21.5, "rh_pct": 40.25, "lux": 300.0, "noise_dba": 45.5}
    readings.update(env)
    return Window(device_id, k, BASE_TS + 60 * k, 60, 30, True, 3, 28,
                  readings["co2_ppm"], readings["temp_c"], readings["rh_pct"],
                  readings["lux"], readings["noise_dba"])


@pytest.fixture
def victoria(tmp_path) -> Iterator[VictoriaMetrics]:
    vm = VictoriaMetrics(tmp_path / "vm").start()
    yield vm
    if vm.proc is not None and vm.proc.poll() is None:
        os.kill(vm.proc.pid, signal.SIGCONT)  # in case a test left it stopped
    vm.stop()


def make_sink(url: str, **kw) -> TimeSeriesSink:
    opts = {"token": None, "org": "campus", "bucket": "campusfleet",
            "flush_interval_s": 0.1, "retry_max_s": 0.5}
    opts.update(kw)
    return TimeSeriesSink(url=url, **opts)


def conserved(sink: TimeSeriesSink, offered: int) -> bool:
    s = sink.snapshot()
    return s["written"] + s["dropped"] + s["failed"] + s["invalid"] + s["queued"] == offered


# --- line protocol (no service needed) --------------------------------------------------

def test_window_line_has_typed_fields_and_the_window_start_in_seconds():
    w = Window(DEV_A, 7, 1764300000, 60, 42, True, 17, 40, 812, 22.4, 48.1, 410.0, 52.3)
    assert window_line(w) == (
        "campus_window,device_id=cf-00000000a001 win=60i,occupied_s=42i,pir=17i,radar_s=40i,"
        "co2_ppm=812i,temp_c=22.4,rh_pct=48.1,lux=410.0,noise_dba=52.3,present=true 1764300000")


def test_window_line_omits_absent_and_non_finite_readings_and_keeps_field_types():
    # No PIR/radar, CO2 sensor failed, temperature NaN (never from the decoder, but a
    # line-protocol NaN would make the whole batch fail), integer-valued lux.
    w = Window(DEV_A, 8, 1764300060, 60, 0, False, None, None, None, float("nan"), 50.0, 12, None)
    assert window_line(w) == (
        "campus_window,device_id=cf-00000000a001 win=60i,occupied_s=0i,rh_pct=50.0,lux=12.0,"
        "present=false 1764300060")


def test_window_line_refuses_items_that_are_not_usable_windows():
    assert window_line(Event(DEV_A, 1, 1764300000, True)) is None  # a presence event, not a window
    assert window_line(window("not a device id", 1)) is None    # a space would break the line
    assert window_line(Window(DEV_A, 1, -60, 60, 0, False, None, None, None, None, None,
                              None, None)) is None              # no valid window start
    assert window_line(object()) is None
    assert window_line(None) is None


def test_accepted_windows_skips_duplicates_and_other_kinds():
    w1, w2 = window(DEV_A, 1), window(DEV_A, 2)
    good = [Received(w1, 0.0), Received(Event(DEV_A, 3, BASE_TS, True), 0.0), Received(w2, 0.0)]
    assert accepted_windows(good, [ACCEPTED, ACCEPTED, DUPLICATE]) == [w1]


# --- against VictoriaMetrics ---------------------------------------------------------------

def test_windows_land_in_victoriametrics_with_exact_values(victoria):
    sink = make_sink(victoria.url)
    try:
        sparse = Window(DEV_B, 5, BASE_TS + 300, 60, 0, False, None, None, None, 19.75, None, None, None)
        assert sink.offer([window(DEV_A, 0), window(DEV_A, 1, co2_ppm=1520, temp_c=23.0), sparse]) == 3
        assert sink.flush(15), sink.snapshot()
        got = victoria.samples('{__name__=~"campus_window_.*"}')
    finally:
        sink.close(5)
    assert got[("campus_window_co2_ppm", DEV_A)] == {BASE_TS: 700, BASE_TS + 60: 1520}
    assert got[("campus_window_temp_c", DEV_A)] == {BASE_TS: 21.5, BASE_TS + 60: 23.0}
    assert got[("campus_window_rh_pct", DEV_A)] == {BASE_TS: 40.25, BASE_TS + 60: 40.25}
    assert got[("campus_window_occupied_s", DEV_A)] == {BASE_TS: 30, BASE_TS + 60: 30}
    assert got[("campus_window_present", DEV_A)] == {BASE_TS: 1, BASE_TS + 60: 1}
    assert got[("campus_window_win", DEV_A)] == {BASE_TS: 60, BASE_TS + 60: 60}
    # The sparse window wrote what it had and nothing it did not.
    assert {name for name, dev in got if dev == DEV_B} == {
        "campus_window_win", "campus_window_occupied_s", "campus_window_present", "campus_window_temp_c"}
    assert got[("campus_window_temp_c", DEV_B)] == {BASE_TS + 300: 19.75}
    assert got[("campus_window_present", DEV_B)] == {BASE_TS + 300: 0}
    assert sink.snapshot() == {"written": 3, "dropped": 0, "failed": 0, "invalid": 0,
                               "write_errors": 0, "queued": 0}


def test_unusable_items_are_counted_invalid_and_the_rest_still_lands(victoria):
    sink = make_sink(victoria.url)
    try:
        items = [window(DEV_A, 0), Event(DEV_A, 1, BASE_TS, True), window("cf-bad", 2), None,
                 window(DEV_A, 3)]
        sink.offer(items)
        assert sink.flush(15)
        got = victoria.samples('campus_window_co2_ppm')
    finally:
        sink.close(5)
    assert got == {("campus_window_co2_ppm", DEV_A): {BASE_TS: 700, BASE_TS + 180: 703}}
    s = sink.snapshot()
    assert (s["written"], s["invalid"], s["dropped"], s["failed"]) == (2, 3, 0, 0)


def test_offer_never_blocks_while_the_tsdb_hangs(victoria):
    """VictoriaMetrics frozen with SIGSTOP: the kernel still accepts connections, nobody
    answers, so every write hangs until its read timeout. offer() must not notice."""
    sink = make_sink(victoria.url, queue_max=1000, batch_max=50, http_timeout_ms=(1000, 3000))
    os.kill(victoria.proc.pid, signal.SIGSTOP)
    try:
        sink.offer([window(DEV_A, k) for k in range(50)])   # a full batch: the writer takes it
        wait_until(lambda: sink.snapshot()["queued"] == 50 and not sink._queue, 5, 0.01,
                   "the writer to take the batch into a hanging write")
        slowest_s = 0.0
        for chunk in range(1, 11):
            started = time.perf_counter()
            assert sink.offer([window(DEV_A, chunk * 50 + k) for k in range(50)]) == 50
            slowest_s = max(slowest_s, time.perf_counter() - started)
        # A blocked offer would take the 3 s read timeout; a queue append takes microseconds.
        assert slowest_s < 0.2, f"offer() took {slowest_s:.3f} s while the TSDB hung"
        assert sink.snapshot()["written"] == 0
    finally:
        os.kill(victoria.proc.pid, signal.SIGCONT)
    try:
        assert sink.flush(30), sink.snapshot()
        got = victoria.samples("campus_window_co2_ppm")
    finally:
        sink.close(5)
    assert got[("campus_window_co2_ppm", DEV_A)] == {BASE_TS + 60 * k: 700 + k for k in range(550)}
    s = sink.snapshot()
    assert (s["written"], s["dropped"], s["failed"], s["queued"]) == (550, 0, 0, 0)


def test_tsdb_down_drops_oldest_counts_them_and_writing_resumes_after_restart(victoria):
    victoria.stop()
    sink = make_sink(victoria.url, queue_max=50, batch_max=20)
    try:
        for chunk in range(10):  # windows 0..199, oldest first
            started = time.perf_counter()
            sink.offer([window(DEV_A, chunk * 20 + k) for k in range(20)])
            assert time.perf_counter() - started < 0.2
        # The newest 50 are held (queue and the batch being retried); the 150 oldest are
        # dropped, including a failed batch once newer windows filled the queue behind it.
        wait_until(lambda: sink.snapshot()["write_errors"] >= 2, 10, 0.05, "two failed writes")
        wait_until(lambda: sink.snapshot()["dropped"] == 150 and sink.snapshot()["queued"] == 50,
                   10, 0.05, "the oldest 150 windows to be dropped")
        s = sink.snapshot()
        assert s["written"] == 0 and s["write_errors"] >= 2
        assert "campusfleet_tsdb_points_total{result=\"dropped\"} 150" in sink.render_prometheus()

        victoria.start()  # same port, same data folder
        sink.offer([window(DEV_A, k) for k in range(200, 205)])
        assert sink.flush(30), sink.snapshot()
        got = victoria.samples("campus_window_co2_ppm")
    finally:
        sink.close(5)
    assert got[("campus_window_co2_ppm", DEV_A)] == {BASE_TS + 60 * k: 700 + k for k in range(150, 205)}
    s = sink.snapshot()
    assert (s["written"], s["dropped"], s["failed"], s["queued"]) == (55, 150, 0, 0)


def test_close_gives_up_within_its_timeout_and_counts_the_rest_dropped(victoria):
    victoria.stop()
    sink = make_sink(victoria.url, queue_max=1000, batch_max=100)
    sink.offer([window(DEV_A, k) for k in range(300)])
    started = time.monotonic()
    sink.close(1.0)
    assert time.monotonic() - started < 4.0
    assert conserved(sink, 300)
    s = sink.snapshot()
    assert (s["written"], s["dropped"], s["queued"]) == (0, 300, 0)
    assert sink.offer([window(DEV_A, 300)]) == 0  # after close: counted, not queued
    assert sink.snapshot()["dropped"] == 301


def test_refused_writes_are_counted_failed_and_not_retried(victoria):
    # A URL path VictoriaMetrics does not serve: a 4xx that no retry can fix (as a
    # wrong bucket or token is on InfluxDB).
    sink = make_sink(victoria.url + "/no-such-prefix")
    try:
        sink.offer([window(DEV_A, k) for k in range(5)])
        assert sink.flush(15)
    finally:
        sink.close(5)
    s = sink.snapshot()
    assert (s["written"], s["failed"], s["write_errors"], s["queued"]) == (0, 5, 1, 0)


def test_from_settings_is_off_by_default_and_reads_the_token_file(victoria, tmp_path):
    assert TimeSeriesSink.from_settings(Settings()) is None
    token_file = tmp_path / "tsdb.token"
    token_file.write_text("s3cret-token\n")
    sink = TimeSeriesSink.from_settings(Settings(tsdb_url=victoria.url, tsdb_token_file=str(token_file),
                                                 tsdb_org="county", tsdb_bucket="campus",
                                                 tsdb_queue_max=10))
    try:
        assert sink is not None and sink.queue_max == 10 and sink.bucket == "campus"
        assert sink._client.token == "s3cret-token"
        sink.offer([window(DEV_B, 1)])
        assert sink.flush(15)
        assert victoria.samples("campus_window_co2_ppm") == {("campus_window_co2_ppm", DEV_B): {BASE_TS + 60: 701}}
    finally:
        sink.close(5)


def test_metrics_endpoint_shows_the_sink_counters_when_it_is_on(victoria, tmp_path):
    srv = FleetServer(Settings(db=f"sqlite:///{tmp_path}/fleet.db", ingest=False)).start()
    sink = make_sink(victoria.url)
    try:
        assert "campusfleet_tsdb_" not in srv.http.get("/metrics").text  # off: not listed
        srv.app.state.tsdb = sink
        sink.offer([window(DEV_A, 0), window(DEV_A, 1)])
        assert sink.flush(15)
        text = srv.http.get("/metrics").text
    finally:
        sink.close(5)
        srv.stop()
    assert 'campusfleet_tsdb_points_total{result="written"} 2\n' in text
    assert 'campusfleet_tsdb_points_total{result="dropped"} 0\n' in text
    assert "campusfleet_tsdb_queue_depth 0\n" in text
    assert "campusfleet_ingest_batches_total" in text  # the ingest counters are still there


def test_the_shipped_grafana_dashboard_queries_answer_from_what_the_sink_wrote(victoria):
    """Every query of docs/grafana/campusfleet-rooms.json runs on VictoriaMetrics and
    finds the sink's series (a renamed field or a PromQL typo would show empty panels)."""
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana/campusfleet-rooms.json").read_text())
    last_ts = int(time.time()) // 60 * 60 - 120
    sink = make_sink(victoria.url)
    try:
        sink.offer([Window(DEV_A, 1, last_ts, 60, 45, True, 3, 40, 1620, 22.0, 45.0, 320.0, 50.0),
                    Window(DEV_B, 1, last_ts, 60, 0, False, None, None, 640, 20.5, 38.0, 10.0, 35.0)])
        assert sink.flush(15)
    finally:
        sink.close(5)
    httpx.get(f"{victoria.url}/internal/force_flush", timeout=10).raise_for_status()
    answers: dict[str, list] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$device", ".*")
            r = httpx.get(f"{victoria.url}/api/v1/query", params={"query": expr, "time": last_ts + 30},
                          timeout=10)
            assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
            answers[panel["title"]] = r.json()["data"]["result"]
            assert answers[panel["title"]], f"no data for panel {panel['title']!r}: {expr}"

    def scalar(title: str) -> float:
        return float(answers[title][0]["value"][1])
    assert scalar("Rooms (devices) over 1500 ppm CO2 now") == 1
    assert scalar("Highest CO2 now") == 1620
    assert scalar("Devices reporting (last 5 min)") == 2
    assert scalar("Occupied now") == 1
    occupancy = {s["metric"]["device_id"]: float(s["value"][1])
                 for s in answers["Occupancy (share of each window the room was occupied)"]}
    assert occupancy == {DEV_A: 0.75, DEV_B: 0.0}
