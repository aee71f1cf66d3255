"""Writing one batch of raw MQTT messages: decode each, store the good ones in one
transaction (retried until it commits), count what happened. Used by ingest's writer
thread, or by its writer process (`writer_process_main`), which lets decoding and
storing run on another core than the MQTT client: the process that owns paho sends
batches down a pipe, and acks a batch when the writer process reports it committed."""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe

from sqlalchemy import Connection, Engine

from fleet_server.settings import Settings

from fleet_server.ingest.fastpath import decode
from fleet_server.ingest.ratelimit import DeviceRateLimiter
from fleet_server.ingest.store import Received, store_batch
from fleet_server.ingest.tsdb import TimeSeriesSink, accepted_windows
from fleet_server.protocol import Ignored, Rejected

log = logging.getLogger(__name__)

REJECT_LOG_INTERVAL_S = 60.0
COMMIT_RETRY_MAX_S = 10.0

# (topic, payload, received_s, retained): what a batch carries, in-process or down the pipe.
Item = tuple[str, bytes, float, bool]

_KIND = {"Window": "telemetry", "Event": "event", "Status": "status", "Ack": "ack"}


class BatchWriter:
    def __init__(self, engine: Engine, should_stop: Callable[[], bool] = lambda: False,
                 tsdb: TimeSeriesSink | None = None, limiter: DeviceRateLimiter | None = None) -> None:
        self.engine = engine
        self.should_stop = should_stop
        self.tsdb = tsdb  # optional: newly stored windows also go there, after the commit
        # Optional per-device message rate limit (ingest/ratelimit.py): over it a message
        # is rejected as `rate_limited`, and counts carry ("throttled", device_id).
        self.limiter = limiter
        self._throttle_logged: dict[str, float] = {}
        self._conn: Connection | None = None
        self._reject_logged: dict[str, float] = {}

    def write(self, items: list[Item]) -> tuple[Counter[tuple[str, str]], int] | None:
        """Decode and store; returns (counts by (result, reason), failed commits), or
        None when told to stop before the batch could be committed (nothing stored,
        so nothing may be acked)."""
        good: list[Received] = []
        counts: Counter[tuple[str, str]] = Counter()
        now = time.time()
        limiter = self.limiter
        for topic, payload, received_s, retained in items:
            if limiter is not None:
                parts = topic.split("/", 3)
                if not limiter.check(parts[2] if len(parts) > 2 else "", received_s):
                    counts[("rejected", "rate_limited")] += 1
                    continue
            try:
                good.append(Received(decode(topic, payload, now), received_s, retained))
            except Rejected as r:
                counts[("rejected", r.reason)] += 1
                self._log_reject(topic, r)
            except Ignored:
                pass
            except Exception as e:  # noqa: BLE001 - one bad message must not stop ingest
                # The decoder promises Rejected or Ignored only; anything else is a bug
                # there. The message cannot be stored either way: count it and move on.
                counts[("rejected", "out_of_range")] += 1
                log.error("decoder failed on a message on %s (%s: %s); rejected",
                          topic[:100], type(e).__name__, str(e)[:100])
        if limiter is not None and limiter.throttled:
            self._flag_throttled(limiter, counts)
        errors = 0
        delay = 0.2
        while True:
            try:
                conn = self._connection()
                with conn.begin():
                    outcomes = store_batch(conn, good)
                break
            except Exception:
                self._drop_connection()
                errors += 1
                log.exception("ingest commit failed; retrying in %.1f s (nothing acked)", delay)
                if self.should_stop():
                    return None
                time.sleep(delay)
                delay = min(delay * 2, COMMIT_RETRY_MAX_S)
        if self.tsdb is not None:
            self.tsdb.offer(accepted_windows(good, outcomes))  # a queue put: never blocks
        counts.update((outcome, _KIND[type(item.msg).__name__]) for item, outcome in zip(good, outcomes))
        return counts, errors

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Connection:
        """The writer's own connection, held between batches (no pool round trip)."""
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        """Drop a connection that failed (the next batch opens a fresh one)."""
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self._conn = None

    def _flag_throttled(self, limiter: DeviceRateLimiter, counts: Counter[tuple[str, str]]) -> None:
        now = time.monotonic()
        for device_id, n in limiter.take_throttled().items():
            counts[("throttled", device_id)] += n
            if now - self._throttle_logged.get(device_id, -REJECT_LOG_INTERVAL_S) >= REJECT_LOG_INTERVAL_S:
                if len(self._throttle_logged) > 10000:
                    self._throttle_logged.clear()
                self._throttle_logged[device_id] = now
                log.warning("device %s is over its message rate (%.3g/s, burst %d): %d message(s) dropped "
                            "as rate_limited", device_id[:40], limiter.buckets.rate, limiter.buckets.burst, n)

    def _log_reject(self, topic: str, r: Rejected) -> None:
        parts = topic.split("/")
        key = parts[2] if len(parts) > 2 else topic
        now = time.monotonic()
        if now - self._reject_logged.get(key, -REJECT_LOG_INTERVAL_S) >= REJECT_LOG_INTERVAL_S:
            if len(self._reject_logged) > 10000:
                self._reject_logged.clear()
            self._reject_logged[key] = now
            log.warning("rejected message on %s: %s", topic[:100], r)


def device_limiter(device_rate: tuple[float, int] | None) -> DeviceRateLimiter | None:
    """(rate per s, burst) -> the limiter; None or a rate <= 0: no limit."""
    if device_rate is None or device_rate[0] <= 0:
        return None
    return DeviceRateLimiter(device_rate[0], device_rate[1])


def writer_process_main(db_url: str, pipe: Pipe, log_level: int, settings: Settings | None = None,
                        device_rate: tuple[float, int] | None = None) -> None:
    """The writer process: (batch id, items) in, (batch id, counts, failed commits) out,
    in order. Exits when the pipe closes or brings None, and when its parent is gone (a
    batch it could not commit is then simply not reported: never acked, redelivered)."""
    from fleet_server.db.engine import make_engine

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parent = os.getppid()
    engine = make_engine(db_url)
    # The time-series sink, if configured, lives here beside the commits it follows.
    tsdb = TimeSeriesSink.from_settings(settings) if settings is not None else None
    writer = BatchWriter(engine, should_stop=lambda: os.getppid() != parent, tsdb=tsdb,
                         limiter=device_limiter(device_rate))
    try:
        while True:
            try:
                msg = pipe.recv()
            except (EOFError, OSError):
                return
            if msg is None or os.getppid() != parent:
                return  # a batch left in the pipe by a dead parent: nobody would ack it
            batch_id, items = msg
            result = writer.write(items)
            if result is None:
                return
            try:
                pipe.send((batch_id, result[0], result[1]))
            except (BrokenPipeError, OSError):
                return
    except KeyboardInterrupt:
        return
    finally:
        if tsdb is not None:
            tsdb.close(5.0)
            log.info("tsdb sink: %s", tsdb.snapshot())
        writer.close()
        engine.dispose()
