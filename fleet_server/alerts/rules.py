"""Alert thresholds, each with where it comes from (DOMAIN.md), in one place so the
evaluator, the API and docs/alerts.md say the same thing."""
from __future__ import annotations

from fleet_server.metrics.definitions import CO2_BREACH_PPM

# -- offline (DOMAIN.md "Device health": offline on the will, or on silence past
#    3 x window; issue 4: alert when offline > 30 min counted in school hours) -------
OFFLINE_AFTER_SCHOOL_S = 30 * 60
# How far back school time is counted for a node offline a long time: enough to cross
# a summer holiday's edge; an older outage has surely passed 30 school minutes.
OFFLINE_COUNT_BACK_DAYS = 70

# -- CO2 (DOMAIN.md "Environment thresholds": > 1500 ppm is a breach, GB/T 17226-2017
#    classrooms; judged on occupied time only) ----------------------------------------
CO2_ALERT_PPM = CO2_BREACH_PPM
# Windows read per run: those whose ts is at most this old (recent data only; late
# replays from a node's outbox older than this do not open alerts).
CO2_LOOKBACK_S = 30 * 60
# An episode with no window with a CO2 reading for this long is over: the node went
# quiet, so the breach can no longer be seen to hold.
CO2_QUIET_S = 10 * 60

SEVERITY = {"offline": "warning", "co2_breach": "critical", "sensor_failed": "warning"}

# Shown by the API next to the alerts so nobody guesses what they mean.
DEFINITIONS = {
    "offline": "a node assigned to a room is offline (its will, or no message within 3 x its window) "
               "for more than 30 minutes counted only inside its school's hours on school days "
               "(weekends, holidays and nights do not count); resolved when it is online again "
               "or taken out of the room",
    "co2_breach": "a room's window mean CO2 > 1500 ppm in an occupied window (GB/T 17226-2017 "
                  "classrooms 0.15%); one alert per episode of consecutive breaching windows, with "
                  "its peak; resolved at the end of the last breaching window once a window without "
                  "breach arrives, or after 10 minutes without a CO2 reading",
    "sensor_failed": "the node's latest status reports a sensor in state failed (fitted but erroring); "
                     "one alert per device and sensor; resolved when a status reports it ok or missing",
    "state": "open: not resolved, not acknowledged; acked: not resolved, acknowledged; resolved",
}
