"""Ingest counters, rendered as Prometheus text on /metrics."""
from __future__ import annotations

import threading
import time
from collections import Counter

from fleet_server.ingest.ratelimit import METRICS_TOP_DEVICES
from fleet_server.protocol import REJECT_REASONS

KINDS = ("telemetry", "event", "status", "ack")
# Rejects decided before a message reaches ingest: `spoofed` = a device published on
# another device's topics and the embedded broker dropped it (fleet_server/security).
BROKER_REJECT_REASONS = ("spoofed",)
# Rejects decided by ingest before decoding: `rate_limited` = over the device's message
# rate (fleet_server/ingest/ratelimit.py); the device is flagged as throttled.
INGEST_REJECT_REASONS = ("rate_limited",)
# A device counts as throttled now if it was within this many seconds.
THROTTLED_RECENT_S = 600.0


class IngestStats:
    """Thread-safe counters. `messages[(result, reason)]`: result is accepted,
    duplicate or rejected; reason is the message kind for accepted/duplicate and the
    reject reason for rejected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: Counter[tuple[str, str]] = Counter()
        self.batches = 0
        self.commit_errors = 0
        self.queue_depth = 0
        self.connected = False
        # Devices over their message rate: drops per device, and when it last happened.
        self.throttled: Counter[str] = Counter()
        self.throttled_at: dict[str, float] = {}

    def count(self, result: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self.messages[(result, reason)] += n

    def add_batch(self, counts: Counter[tuple[str, str]] | None = None) -> None:
        """One committed batch and what it held, under one lock."""
        with self._lock:
            self.batches += 1
            if counts:
                if any(result == "throttled" for result, _ in counts):
                    # ("throttled", device_id) from the writer: flags, not message counts.
                    now = time.monotonic()
                    counts = Counter(counts)
                    for key in [k for k in counts if k[0] == "throttled"]:
                        self.throttled[key[1]] += counts.pop(key)
                        self.throttled_at[key[1]] = now
                self.messages.update(counts)

    def throttled_devices(self, within_s: float = THROTTLED_RECENT_S) -> list[str]:
        """Devices that were over their message rate in the last `within_s` seconds."""
        now = time.monotonic()
        with self._lock:
            return sorted(d for d, t in self.throttled_at.items() if now - t <= within_s)

    def summary(self) -> str:
        """One line: `accepted=.. duplicate=.. rejected=.. batches=..` (the worker logs it at exit)."""
        snap = self.snapshot()
        totals = Counter()
        for (result, _), n in snap.items():
            totals[result] += n
        return (f"accepted={totals['accepted']} duplicate={totals['duplicate']} "
                f"rejected={totals['rejected']} batches={self.batches} commit_errors={self.commit_errors}")

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.messages)

    def render_prometheus(self) -> str:
        snap = self.snapshot()
        # Every series exists from the start (zeros), so rate() works on first use.
        keys = {("accepted", k) for k in KINDS} | {("duplicate", k) for k in KINDS}
        keys |= {("rejected", r) for r in REJECT_REASONS + BROKER_REJECT_REASONS + INGEST_REJECT_REASONS}
        keys |= set(snap)
        lines = [
            "# HELP campusfleet_ingest_messages_total MQTT messages handled by ingest, by result and reason.",
            "# TYPE campusfleet_ingest_messages_total counter",
        ]
        for result, reason in sorted(keys):
            lines.append(
                f'campusfleet_ingest_messages_total{{result="{result}",reason="{reason}"}} {snap.get((result, reason), 0)}'
            )
        with self._lock:
            lines += [
                "# HELP campusfleet_ingest_batches_total Committed ingest batches.",
                "# TYPE campusfleet_ingest_batches_total counter",
                f"campusfleet_ingest_batches_total {self.batches}",
                "# HELP campusfleet_ingest_commit_errors_total Failed batch commits (retried, never acked).",
                "# TYPE campusfleet_ingest_commit_errors_total counter",
                f"campusfleet_ingest_commit_errors_total {self.commit_errors}",
                "# HELP campusfleet_ingest_queue_depth Messages received and not yet committed.",
                "# TYPE campusfleet_ingest_queue_depth gauge",
                f"campusfleet_ingest_queue_depth {self.queue_depth}",
                "# HELP campusfleet_ingest_connected 1 while ingest is connected to the broker.",
                "# TYPE campusfleet_ingest_connected gauge",
                f"campusfleet_ingest_connected {int(self.connected)}",
            ]
            worst = self.throttled.most_common(METRICS_TOP_DEVICES)
        recent = len(self.throttled_devices())
        lines += [
            "# HELP campusfleet_ingest_throttled_devices Devices over their message rate in the last 10 minutes.",
            "# TYPE campusfleet_ingest_throttled_devices gauge",
            f"campusfleet_ingest_throttled_devices {recent}",
            "# HELP campusfleet_ingest_rate_limited_total Messages dropped for being over the device's rate, "
            f"per device (the {METRICS_TOP_DEVICES} worst).",
            "# TYPE campusfleet_ingest_rate_limited_total counter",
        ]
        # device ids come from topics: keep only what is safe in a label value
        lines += [f'campusfleet_ingest_rate_limited_total{{device_id="{_label(d)}"}} {n}' for d, n in worst]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped, at most 64 chars."""
    return value[:64].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
