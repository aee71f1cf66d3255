"""Token buckets: a per-device message rate limit for ingest, and the same bucket
for anything else keyed by a name (logins by user or address: TokenBuckets alone).

Ingest (docs/security.md, "Hardening"): each device has a bucket of `burst` tokens
that refills at `rate_per_s`; every message of the device takes one token, and a
message that finds the bucket empty is not stored: it is counted as rejected with
reason `rate_limited` (and acknowledged: the broker must not send it again) and the
device is flagged (/metrics `campusfleet_ingest_throttled_devices`,
`campusfleet_ingest_rate_limited_total{device_id}`, and a warning in the log at most
once a minute per device). Other devices have buckets of their own and are not
affected.

Why a large burst and a low rate: a node that was cut off replays its flash outbox
as fast as the broker acks it. That outbox (firmware/outbox.py) is a ring of 8 x 32 KB:
at most 7,281 window records (72 h of 60 s windows are 4,320), fewer with events. The
default burst of 10,000 takes a full outbox plus the live reports that follow, so a
legitimate backlog is never dropped, while the sustained rate of 1 message a second is
still 60 times what a node sends (one window a minute, a status every 5 minutes, a
presence event now and then). A device that floods gets its burst stored, then 1 a
second, and is flagged for the operator; dropping is the only defence that keeps the
database and the other devices' latency safe, since the broker has already acked the
node (a dropped message is gone, which is why the burst is sized to the outbox).
The bucket follows the messages' arrival times, so a backlog the broker held for
ingest while it was down (delivered all at once after a restart) counts like a node's
replay: up to the burst."""
from __future__ import annotations

import threading
import time
from collections import Counter

DEFAULT_RATE_PER_S = 1.0
DEFAULT_BURST = 10_000
# How many devices /metrics names individually (the worst offenders first).
METRICS_TOP_DEVICES = 100


class TokenBuckets:
    """One token bucket per key. allow(key, now) -> True when the key may go on (and
    takes a token). Thread-safe; memory is bounded by pruning buckets that are full."""

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 1_000_000) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}   # key -> [tokens, last update]
        self._lock = threading.Lock()
        self._next_prune = 0.0

    def allow(self, key: str, now: float | None = None, cost: float = 1.0) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            if now >= self._next_prune:
                self._prune(now)
            b = self._buckets.get(key)
            if b is None:
                if len(self._buckets) >= self.max_keys:
                    self._prune(now)
                b = self._buckets[key] = [self.burst, now]
            elif now > b[1]:
                b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
                b[1] = now
            if b[0] >= cost:
                b[0] -= cost
                return True
            return False

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until `key` has `cost` tokens again (0 if it has them now)."""
        with self._lock:
            b = self._buckets.get(key)
            if b is None or b[0] >= cost:
                return 0.0
            return float("inf") if self.rate == 0 else (cost - b[0]) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        """Forget the buckets that have refilled to full: the same as a new one."""
        self._next_prune = now + 60.0
        rate, burst = self.rate, self.burst
        for key in [k for k, (tokens, last) in self._buckets.items() if tokens + (now - last) * rate >= burst]:
            del self._buckets[key]


class DeviceRateLimiter:
    """Ingest's per-device limit. check(device_id, received_s) -> True to go on;
    False: drop the message (rejected, `rate_limited`). `throttled` counts the drops
    per device since the last take_throttled()."""

    def __init__(self, rate_per_s: float = DEFAULT_RATE_PER_S, burst: int = DEFAULT_BURST) -> None:
        self.buckets = TokenBuckets(rate_per_s, burst)
        self.throttled: Counter[str] = Counter()

    def check(self, device_id: str, received_s: float) -> bool:
        if self.buckets.allow(device_id, received_s):
            return True
        self.throttled[device_id] += 1
        return False

    def take_throttled(self) -> Counter[str]:
        out, self.throttled = self.throttled, Counter()
        return out
