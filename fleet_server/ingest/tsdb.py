"""Optional time-series sink: every newly stored window report is also written as
InfluxDB line protocol (v2 write API, influxdb-client) to InfluxDB 2/3 or VictoriaMetrics.

The SQL database stays the system of record; this sink is a best-effort copy for Grafana.
Ingest calls `offer()` after a batch has committed: it only appends to a bounded queue
and never waits on the network, so a slow or dead TSDB can never hold up commits or
broker acks. A background thread drains the queue in batches, with retry and backoff.

Back-pressure: when the queue is full the OLDEST queued windows are dropped (and counted).
Why oldest: dashboards and alerts read the recent past (CO2 right now), every dropped
window is still in the SQL database, and after an outage the newest `queue_max` windows
are exactly what a "last N hours" panel needs. Dropping the newest would keep stale data
and leave a hole at "now" until the next outage ends."""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_server.ingest.store import ACCEPTED, Received
from fleet_server.protocol import DEVICE_ID_RE, Window

if TYPE_CHECKING:
    from fleet_server.settings import Settings

log = logging.getLogger(__name__)

MEASUREMENT = "campus_window"
# Window fields written as line-protocol fields, with the one type each always has. A
# field must keep one type for good (InfluxDB refuses a point whose field type differs
# from what the bucket already holds), so values are coerced, never passed through.
INT_FIELDS = ("win", "occupied_s", "pir", "radar_s", "co2_ppm")
FLOAT_FIELDS = ("temp_c", "rh_pct", "lux", "noise_dba")
BOOL_FIELDS = ("present",)

BATCH_MAX = 5000                 # points per HTTP write (InfluxDB advises ~5000 lines)
FLUSH_INTERVAL_S = 1.0           # a partial batch waits at most this long
HTTP_TIMEOUT_MS = (2_000, 10_000)  # (connect, read): bounds how long close() can hang
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
ERROR_LOG_INTERVAL_S = 60.0
# HTTP statuses worth retrying: timeouts, rate limits, and any 5xx (server-side trouble).
# Any other 4xx (bad line, type conflict, bad token, missing bucket) fails the same way again.
RETRYABLE_4XX = {408, 429}


def accepted_windows(good: Sequence[Received], outcomes: Sequence[str]) -> list[Window]:
    """The windows of a committed batch that were newly stored (not duplicates): what
    ingest offers to the sink, so a redelivered window is never written twice."""
    return [r.msg for r, outcome in zip(good, outcomes)
            if outcome == ACCEPTED and isinstance(r.msg, Window)]


def window_line(w: Any) -> str | None:
    """One line of line protocol for a window, seconds precision; None when the item is
    not a usable window (not a Window, no valid device id or ts, or no field at all)."""
    try:
        return _window_line(w)
    except Exception:  # noqa: BLE001 - an odd object is counted as invalid, not fatal
        return None


def _window_line(w: Any) -> str | None:
    if not isinstance(w, Window):
        return None  # an event or status carries no readings: not a campus_window point
    device_id, ts = w.device_id, w.ts
    # The device id pattern needs no line-protocol escaping (no space, comma or '=').
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        return None
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        return None
    fields: list[str] = []
    for name in INT_FIELDS:
        v = getattr(w, name, None)
        if isinstance(v, int) and not isinstance(v, bool):
            fields.append(f"{name}={v}i")
        elif isinstance(v, float) and v.is_integer():
            fields.append(f"{name}={int(v)}i")
    for name in FLOAT_FIELDS:
        v = getattr(w, name, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            fields.append(f"{name}={float(v)!r}")  # always a decimal point: a float field
    for name in BOOL_FIELDS:
        v = getattr(w, name, None)
        if isinstance(v, bool):
            fields.append(f"{name}={'true' if v else 'false'}")
    if not fields:
        return None
    return f"{MEASUREMENT},device_id={device_id} {','.join(fields)} {ts}"


class TimeSeriesSink:
    """Bounded queue + one writer thread. Thread-safe: `offer()` may be called from any
    thread; counters are read with `snapshot()` or `render_prometheus()`."""

    def __init__(self, *, url: str, token: str | None, org: str, bucket: str,
                 queue_max: int = 100_000, batch_max: int = BATCH_MAX,
                 flush_interval_s: float = FLUSH_INTERVAL_S, retry_max_s: float = RETRY_MAX_S,
                 http_timeout_ms: tuple[int, int] = HTTP_TIMEOUT_MS) -> None:
        try:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS
        except ImportError:
            raise RuntimeError("the time-series sink needs influxdb-client: "
                               "pip install 'campusfleet[tsdb]'") from None
        if queue_max < 1 or batch_max < 1:
            raise ValueError("queue_max and batch_max must be >= 1")
        self.url = url
        self.bucket = bucket
        self.org = org or None
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self.retry_max_s = retry_max_s
        self.http_timeout_ms = http_timeout_ms
        # retries=False: our own loop retries, so it can back off, give up at close()
        # and count; urllib3's hidden retries would only make a write block longer.
        # (influxdb-client annotates token/org as `str = None`: None is meant to work.)
        self._client = InfluxDBClient(url=url, token=token or None, org=self.org,  # type: ignore[arg-type]
                                      timeout=http_timeout_ms, retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._queue: deque[Window] = deque()
        self._cond = threading.Condition()
        self._pending: list[str] = []   # the batch being written / retried (writer thread)
        self._busy = False              # a batch is out of the queue and not settled yet
        self._flush_waiters = 0         # flush() callers: write partial batches at once
        self._stopping = False
        self._deadline = math.inf       # close(): give up on the TSDB after this monotonic time
        self.written = 0   # points the TSDB acknowledged
        self.dropped = 0   # points discarded: queue full, or still queued when close() gave up
        self.failed = 0    # points the TSDB refused for good (non-retryable 4xx)
        self.invalid = 0   # offered items that were not usable windows
        self.write_errors = 0  # write attempts that failed (each retry counts)
        self._last_error_log = -ERROR_LOG_INTERVAL_S
        self._thread = threading.Thread(target=self._run, name="tsdb-sink", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> TimeSeriesSink | None:
        """The sink the settings ask for, started; None when tsdb_url is empty (off)."""
        if not settings.tsdb_url:
            return None
        token = None
        if settings.tsdb_token_file:
            token = Path(settings.tsdb_token_file).read_text(encoding="utf-8").strip() or None
        return cls(url=settings.tsdb_url, token=token, org=settings.tsdb_org,
                   bucket=settings.tsdb_bucket, queue_max=settings.tsdb_queue_max)

    # --- called by ingest ---------------------------------------------------------
    def offer(self, windows: Iterable[Window]) -> int:
        """Queue windows for writing; never blocks on the TSDB. Returns how many were
        queued. When the queue overflows, the oldest queued windows are dropped."""
        items = list(windows)
        if not items:
            return 0
        with self._cond:
            if self._stopping:
                self.dropped += len(items)
                return 0
            overflow = len(self._queue) + len(items) - self.queue_max
            if overflow > 0:
                self.dropped += overflow
                if overflow >= len(self._queue):
                    # The whole queue goes, and the oldest part of this offer too.
                    items = items[overflow - len(self._queue):]
                    self._queue.clear()
                else:
                    for _ in range(overflow):
                        self._queue.popleft()
            was_empty = not self._queue
            self._queue.extend(items)
            # Wake the writer only when it has something new to decide: the first
            # point of a batch, or a full batch (not on every offer).
            if was_empty or len(self._queue) >= self.batch_max:
                self._cond.notify_all()
        return len(items)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything offered so far is settled (written, refused or dropped).
        True if it got there within timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._flush_waiters += 1
            self._cond.notify_all()  # write a partial batch now, not at the next interval
            try:
                while self._queue or self._busy:
                    left_s = deadline - time.monotonic()
                    if left_s <= 0:
                        return False
                    self._cond.wait(left_s)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, for at most timeout_s (plus one HTTP timeout if a write
        is in flight), then stop; whatever could not be written counts as dropped."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._thread.join(timeout_s + sum(self.http_timeout_ms) / 1000 + 1)
        with self._cond:
            self.dropped += len(self._queue) + len(self._pending)
            self._queue.clear()
            self._pending = []
        self._write_api.close()
        self._client.close()

    # --- counters -----------------------------------------------------------------
    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {"written": self.written, "dropped": self.dropped, "failed": self.failed,
                    "invalid": self.invalid, "write_errors": self.write_errors,
                    "queued": len(self._queue) + len(self._pending)}

    def render_prometheus(self) -> str:
        s = self.snapshot()
        lines = [
            "# HELP campusfleet_tsdb_points_total Window points handled by the time-series sink, by result.",
            "# TYPE campusfleet_tsdb_points_total counter",
        ]
        lines += [f'campusfleet_tsdb_points_total{{result="{k}"}} {s[k]}'
                  for k in ("written", "dropped", "failed", "invalid")]
        lines += [
            "# HELP campusfleet_tsdb_write_errors_total Failed write attempts to the TSDB (each retry counts).",
            "# TYPE campusfleet_tsdb_write_errors_total counter",
            f"campusfleet_tsdb_write_errors_total {s['write_errors']}",
            "# HELP campusfleet_tsdb_queue_depth Points waiting to be written to the TSDB.",
            "# TYPE campusfleet_tsdb_queue_depth gauge",
            f"campusfleet_tsdb_queue_depth {s['queued']}",
        ]
        return "\n".join(lines) + "\n"

    # --- writer thread ------------------------------------------------------------
    def _run(self) -> None:
        delay_s = min(RETRY_FIRST_S, self.retry_max_s)
        while True:
            try:
                if not self._pending and not self._take_batch():
                    return
                if not self._pending:
                    continue  # the whole batch was invalid
                if self._write_pending():
                    delay_s = min(RETRY_FIRST_S, self.retry_max_s)
                    continue
                self._after_failure(delay_s)
                delay_s = min(delay_s * 2, self.retry_max_s)
            except Exception:  # noqa: BLE001 - a bug here must not silently end the sink
                log.exception("time-series sink writer failed; dropping its batch")
                with self._cond:
                    self.dropped += len(self._pending)
                    self._pending = []
                time.sleep(1.0)

    def _take_batch(self) -> bool:
        """Wait for a batch (batch_max points, or flush_interval_s after the first one
        arrived, or at once when flushing/closing) and make it pending. False: stop."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()  # wakes flush()
            while not self._queue and not self._stopping:
                self._cond.wait()
            first_s = time.monotonic()
            while (len(self._queue) < self.batch_max and not self._stopping
                   and not self._flush_waiters):
                left_s = first_s + self.flush_interval_s - time.monotonic()
                if left_s <= 0:
                    break
                self._cond.wait(left_s)
            if self._stopping and (not self._queue or time.monotonic() >= self._deadline):
                self.dropped += len(self._queue)
                self._queue.clear()
                return False
            self._busy = True
            batch = [self._queue.popleft() for _ in range(min(self.batch_max, len(self._queue)))]
        lines = [line for line in map(window_line, batch) if line is not None]
        with self._cond:
            self.invalid += len(batch) - len(lines)
            self._pending = lines
        return True

    def _after_failure(self, delay_s: float) -> None:
        """After a retryable failure: maybe drop the batch, then back off (close() wakes
        the wait early)."""
        with self._cond:
            if len(self._queue) >= self.queue_max:
                # The queue is full of newer windows: the failed batch is now the oldest
                # data held, so it goes first (the same rule as offer()).
                self.dropped += len(self._pending)
                self._pending = []
            if self._stopping and time.monotonic() >= self._deadline:
                self.dropped += len(self._pending) + len(self._queue)
                self._pending = []
                self._queue.clear()
                return
            self._cond.wait(min(delay_s, max(0.0, self._deadline - time.monotonic())))

    def _write_pending(self) -> bool:
        """One write of the pending batch. True when it is settled (written or refused
        for good), False when it should be retried."""
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException

        lines = self._pending
        body = "\n".join(lines).encode()
        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=body,  # type: ignore[arg-type]
                                  write_precision=WritePrecision.S)  # type: ignore[arg-type]
        except ApiException as e:
            with self._cond:
                self.write_errors += 1
                if e.status is None or e.status >= 500 or e.status in RETRYABLE_4XX:
                    self._log_error("TSDB write of %d points failed (HTTP %s); will retry",
                                    len(lines), e.status)
                    return False
                self.failed += len(lines)
                self._pending = []
            self._log_error("TSDB refused %d points (HTTP %s: %s); not retried",
                            len(lines), e.status, str(e.body)[:200])
            return True
        except Exception as e:  # noqa: BLE001 - connection refused, timeout, DNS: retry
            with self._cond:
                self.write_errors += 1
            self._log_error("TSDB write of %d points to %s failed (%s: %s); will retry",
                            len(lines), self.url, type(e).__name__, str(e)[:200])
            return False
        with self._cond:
            self.written += len(lines)
            self._pending = []
        return True

    def _log_error(self, fmt: str, *args: Any) -> None:
        """At most one line a minute: an outage must not flood the log."""
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.warning(fmt, *args)
