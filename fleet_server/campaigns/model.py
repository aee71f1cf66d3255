"""Campaign and per-device states, and how a node's `ota` ack stages map onto them.

A device moves forward only: pending -> sent -> downloading -> verified -> installed ->
one final state. The final states are confirmed and skipped (success), rolled_back and
failed (failure), cancelled (never sent: the campaign ended first)."""
from __future__ import annotations

import math

# Campaign states. running and paused are active; the rest are final (a halted campaign
# is not resumed: fix the release and start a new campaign, which skips the devices
# already on the version).
RUNNING, PAUSED, HALTED, ABORTED, COMPLETED = "running", "paused", "halted", "aborted", "completed"
ACTIVE = (RUNNING, PAUSED)
CAMPAIGN_STATES = (RUNNING, PAUSED, HALTED, ABORTED, COMPLETED)

PENDING, SENT, DOWNLOADING, VERIFIED, INSTALLED = "pending", "sent", "downloading", "verified", "installed"
CONFIRMED, SKIPPED, ROLLED_BACK, FAILED, CANCELLED = "confirmed", "skipped", "rolled_back", "failed", "cancelled"
DEVICE_STATES = (PENDING, SENT, DOWNLOADING, VERIFIED, INSTALLED, CONFIRMED, SKIPPED, ROLLED_BACK, FAILED,
                 CANCELLED)
IN_FLIGHT = (SENT, DOWNLOADING, VERIFIED, INSTALLED)
SUCCESS = (CONFIRMED, SKIPPED)
FAILURE = (ROLLED_BACK, FAILED)
FINAL = SUCCESS + FAILURE + (CANCELLED,)

# The node's ack stages (PROTOCOL.md `ack` with an "ota" key; firmware/ota.py).
STAGE_STATE = {"accepted": DOWNLOADING, "download": DOWNLOADING, "verified": VERIFIED, "installed": INSTALLED,
               "confirmed": CONFIRMED, "rolled_back": ROLLED_BACK, "refused": FAILED}
# The stages a state proves were passed (a verified manifest before any install).
IMPLIED = {VERIFIED: (DOWNLOADING,), INSTALLED: (DOWNLOADING, VERIFIED),
           CONFIRMED: (DOWNLOADING, VERIFIED, INSTALLED), ROLLED_BACK: (DOWNLOADING, VERIFIED, INSTALLED)}
RANK = {PENDING: 0, SENT: 1, DOWNLOADING: 2, VERIFIED: 3, INSTALLED: 4,
        CONFIRMED: 5, SKIPPED: 5, ROLLED_BACK: 5, FAILED: 5, CANCELLED: 5}

# Defaults of a new campaign (docs/ota.md "Campaign policy").
DEFAULT_WAVES = (1, 10, 50, 100)    # cumulative percentages of the target
DEFAULT_SUCCESS_PCT = 90.0          # a wave must confirm this share before the next one starts
DEFAULT_MAX_FAILURE_PCT = 10.0      # halt once failures exceed this share of the devices sent
DEFAULT_WAVE_TIMEOUT_S = 6 * 3600   # a device still in flight this long after its command: failed
DEFAULT_COMMAND_TTL_S = 24 * 3600   # the command waits this long at the broker for a node that is away


def check_waves(waves: list[float]) -> list[float]:
    """Cumulative percentages, strictly increasing, ending at 100; raises ValueError."""
    if not waves or len(waves) > 10:
        raise ValueError("waves: 1 to 10 cumulative percentages, e.g. [1, 10, 50, 100]")
    for a, b in zip(waves, waves[1:]):
        if b <= a:
            raise ValueError(f"waves must increase: {a} then {b}")
    if waves[0] <= 0 or waves[-1] != 100:
        raise ValueError("waves are percentages above 0 and the last one is 100")
    return [float(w) for w in waves]


def wave_sizes(n_devices: int, waves: list[float]) -> list[int]:
    """How many devices are in waves 0..k together, for each k: ceil(pct * n / 100), at
    least 1 device in the first wave, never more than n. A wave may come out empty for a
    small target (3 devices at 1 % and 10 % are both 1): it passes at once."""
    out = []
    for pct in waves:
        out.append(min(n_devices, max(1, math.ceil(pct * n_devices / 100 - 1e-9))))
    out[-1] = n_devices
    return out
