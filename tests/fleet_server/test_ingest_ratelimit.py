"""Per-device message rate limit in ingest (fleet_server/ingest/ratelimit.py): a flooding
device is throttled and flagged, the others are not touched, and a node replaying its
whole flash outbox after an outage loses nothing."""
from __future__ import annotations

import time
import uuid

import pytest

from fleet_server.db.engine import make_engine, migrate
from fleet_server.ingest.ratelimit import DEFAULT_BURST, DeviceRateLimiter, TokenBuckets
from fleet_server.ingest.stats import IngestStats
from fleet_server.ingest.writer import BatchWriter
from fleet_server.settings import Settings
from tests.utils.loadgen import window_payload
from tests.utils.services import FleetServer, Publisher, wait_until

# firmware/outbox.py: 8 segments of 32 KB, 36-byte window records -> this many at most.
OUTBOX_MAX_WINDOWS = 8 * (32768 // 36)


def test_token_bucket_gives_the_burst_then_the_rate():
    b = TokenBuckets(rate_per_s=2, burst=5)
    assert [b.allow("a", 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert b.allow("b", 100.0)              # another key has its own bucket
    assert not b.allow("a", 100.2)          # 0.4 token: not yet
    assert b.allow("a", 100.5) and not b.allow("a", 100.5)   # 1 token after 0.5 s at 2/s
    assert b.retry_after("a") == pytest.approx(0.5)
    assert sum(b.allow("a", 1000.0) for _ in range(10)) == 5   # refills only up to the burst
    before = b._buckets["a"][0]
    b.allow("a", 999.0)                      # a clock step back never adds tokens
    assert b._buckets["a"][0] <= before
    b._prune(10_000.0)
    assert len(b) == 0                       # full buckets are forgotten


def test_the_default_burst_takes_a_whole_outbox():
    assert DEFAULT_BURST > OUTBOX_MAX_WINDOWS


@pytest.fixture
def engine(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/fleet.db")
    migrate(eng)
    yield eng
    eng.dispose()


def _windows(device_id: str, n: int, first_seq: int = 1) -> list[tuple[str, bytes]]:
    end = int(time.time()) // 60 * 60 - 60
    return [(f"campus/v1/{device_id}/telemetry", window_payload(first_seq + i, end - 60 * (n - 1 - i), i))
            for i in range(n)]


def test_a_flooding_device_is_throttled_and_flagged_and_others_are_not(engine):
    writer = BatchWriter(engine, limiter=DeviceRateLimiter(rate_per_s=1, burst=100))
    flood, calm = "cf-f100d0000001", "cf-ca1300000001"
    t0 = 1_000_000.0
    items = [(t, p, t0, False) for t, p in _windows(flood, 300)]
    items[150:150] = [(t, p, t0, False) for t, p in _windows(calm, 50)]
    counts, _ = writer.write(items)
    assert counts[("accepted", "telemetry")] == 150            # 100 of the flood, all 50 of the calm one
    assert counts[("rejected", "rate_limited")] == 200
    assert counts[("throttled", flood)] == 200 and ("throttled", calm) not in counts
    stats = IngestStats()
    stats.add_batch(counts)
    assert stats.throttled_devices() == [flood]
    text = stats.render_prometheus()
    assert 'campusfleet_ingest_messages_total{result="rejected",reason="rate_limited"} 200' in text
    assert "campusfleet_ingest_throttled_devices 1" in text
    assert f'campusfleet_ingest_rate_limited_total{{device_id="{flood}"}} 200' in text
    assert "throttled" not in stats.summary()
    # 30 s later the flooder has 30 tokens again: the sustained rate goes through.
    later = [(t, p, t0 + 30, False) for t, p in _windows(flood, 40, first_seq=1000)]
    counts, _ = writer.write(later)
    assert counts[("accepted", "telemetry")] == 30 and counts[("rejected", "rate_limited")] == 10
    writer.close()
    with engine.connect() as conn:
        stored = dict(conn.exec_driver_sql("SELECT device_id, count(*) FROM windows GROUP BY device_id").all())
    assert stored == {flood: 130, calm: 50}


def test_a_full_outbox_replayed_at_once_is_all_stored(engine):
    """A node back after 5 days replays its whole outbox as fast as PUBACKs come; with
    the default limit not one window is dropped."""
    writer = BatchWriter(engine, limiter=DeviceRateLimiter())
    device_id = "cf-0b0c00000001"
    t0 = time.time()
    replay = _windows(device_id, OUTBOX_MAX_WINDOWS)
    total = 0
    for i in range(0, len(replay), 500):      # the batches ingest would make
        counts, _ = writer.write([(t, p, t0 + i / 5000, False) for t, p in replay[i:i + 500]])
        assert counts[("rejected", "rate_limited")] == 0
        total += counts[("accepted", "telemetry")]
    writer.close()
    assert total == OUTBOX_MAX_WINDOWS


def test_running_server_drops_a_flood_but_keeps_a_neighbour(mosquitto, tmp_path):
    settings = Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=mosquitto.url, require_registration=False,
                        ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
                        ingest_device_rate_per_s=0.5, ingest_device_burst=40)
    srv = FleetServer(settings).start()
    pub = Publisher(mosquitto.host, mosquitto.port, client_id=f"flood-{uuid.uuid4().hex[:6]}")
    try:
        flood, calm = "cf-f100d0000002", "cf-ca1300000002"
        for topic, payload in _windows(flood, 120):
            pub.publish(topic, payload)
        for topic, payload in _windows(calm, 20):
            pub.publish(topic, payload)
        wait_until(lambda: (d := srv.device(calm)) and d["windows_received"] == 20, 20, what="the calm device")
        wait_until(lambda: srv.metric("rejected", "rate_limited") >= 60, 20, what="rate_limited rejects")
        stored = srv.device(flood)["windows_received"]
        assert 40 <= stored < 60, stored                # the burst, plus what 0.5/s refilled meanwhile
        assert srv.metric("rejected", "rate_limited") == 120 - stored
        text = srv.http.get("/metrics").text
        assert "campusfleet_ingest_throttled_devices 1" in text
        assert f'campusfleet_ingest_rate_limited_total{{device_id="{flood}"}} {120 - stored}' in text
    finally:
        pub.close()
        srv.stop()
