"""Login throttling by client address: a token bucket per address (an IPv6 client by
its network prefix), in front of the per-user lockout of fleet_server.auth.users.

Why both: the lockout stops guessing one account's password, but an attacker who tries
a few passwords on many accounts (password spraying) never trips it; the address bucket
stops that, and also saves the hash time a flood of logins would cost. Every attempt,
right or wrong, takes a token, so the check runs before any password is hashed.

IPv6: one host (or one attacker) usually holds a whole /64 and can pick a new address
for every request, so an IPv6 address counts by its /prefix network (64 by default);
an IPv4-mapped address (::ffff:a.b.c.d) counts as the IPv4 address it is."""
from __future__ import annotations

import ipaddress
import math
import threading
import time

from fleet_server.ingest.ratelimit import TokenBuckets

# A throttled address is audited at most once per this many seconds (with the count of
# the attempts refused in between): the audit log is append-only, so a flood must not
# be able to grow it at the flood's rate.
AUDIT_EVERY_S = 60.0
MAX_ADDRESSES = 100_000


def address_key(ip: str | None, ipv6_prefix: int = 64) -> str:
    """The bucket an address counts in: the IPv4 address, or the IPv6 network."""
    if not ip:
        return "unknown"
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])   # drop an IPv6 zone id (fe80::1%eth0)
    except ValueError:
        return f"other:{ip[:64]}"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        return str(addr)
    return str(ipaddress.IPv6Network((addr, ipv6_prefix), strict=False))


class LoginThrottle:
    """check(ip) -> None when the address may try a login now (takes a token), else the
    seconds until it may try again. audit_due(ip) says whether to audit this refusal."""

    def __init__(self, per_min: float, burst: int, ipv6_prefix: int = 64) -> None:
        self.ipv6_prefix = ipv6_prefix
        self.buckets = TokenBuckets(per_min / 60.0, burst, max_keys=MAX_ADDRESSES) if per_min > 0 else None
        self._audited: dict[str, list[float]] = {}     # key -> [last audited at, refused since]
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> LoginThrottle:
        return cls(settings.login_address_per_min, settings.login_address_burst, settings.login_ipv6_prefix)

    def key(self, ip: str | None) -> str:
        return address_key(ip, self.ipv6_prefix)

    def check(self, ip: str | None, now: float | None = None) -> float | None:
        if self.buckets is None:
            return None
        key = self.key(ip)
        if self.buckets.allow(key, now):
            return None
        return self.buckets.retry_after(key)

    def audit_due(self, ip: str | None, now: float | None = None) -> tuple[bool, int]:
        """(audit this refusal, refusals not audited since the last entry)."""
        now = time.monotonic() if now is None else now
        key = self.key(ip)
        with self._lock:
            seen = self._audited.get(key)
            if seen is None or now - seen[0] >= AUDIT_EVERY_S:
                suppressed = 0 if seen is None else int(seen[1])
                if len(self._audited) >= MAX_ADDRESSES:
                    self._audited = {k: v for k, v in self._audited.items() if now - v[0] < AUDIT_EVERY_S}
                self._audited[key] = [now, 0]
                return True, suppressed
            seen[1] += 1
            return False, 0


def retry_after_header(seconds: float) -> str:
    """RFC 9110 10.2.3: a whole number of seconds, at least 1."""
    return str(max(1, math.ceil(seconds))) if math.isfinite(seconds) else "3600"
